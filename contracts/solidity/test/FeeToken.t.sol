// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {FeeToken} from "../FeeToken.sol";

contract FeeTokenTest is Test {
    FeeToken internal token;
    address internal owner = makeAddr("owner");
    address internal user = makeAddr("user");

    function setUp() public {
        token = new FeeToken(owner);
    }

    function test_metadata() public view {
        assertEq(token.name(), "Tollgate Fee Token");
        assertEq(token.symbol(), "TGF");
        assertEq(token.decimals(), 18);
        assertEq(token.owner(), owner);
        assertEq(token.totalSupply(), 0);
    }

    function test_mint_byOwner() public {
        vm.prank(owner);
        token.mint(user, 5e18);
        assertEq(token.balanceOf(user), 5e18);
        assertEq(token.totalSupply(), 5e18);
    }

    function test_mint_onlyOwner() public {
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, user));
        token.mint(user, 1);
    }

    function test_constructor_rejectsZeroOwner() public {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableInvalidOwner.selector, address(0)));
        new FeeToken(address(0));
    }
}
