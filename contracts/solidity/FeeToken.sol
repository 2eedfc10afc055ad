// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title Tollgate fee token for local runs
/// @notice Settlement and ProviderRegistry accept any ERC-20; this one exists so a
/// dev chain (anvil) and the tests have a token whose supply the deployer controls.
contract FeeToken is ERC20, Ownable {
    constructor(address initialOwner) ERC20("Tollgate Fee Token", "TGF") Ownable(initialOwner) {}

    /// @notice Owner-only so a shared dev chain's balances mean something.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
