//! The link emulator over real loopback sockets: delay, pacing, cuts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_loadtest::link::{control, Direction, Link, LinkConfig, LinkState};

/// Every test ends by itself within this.
const BOUND: Duration = Duration::from_secs(20);

/// An echo server on loopback.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn link(up: Direction, down: Direction) -> Link {
    let upstream = echo().await;
    Link::start(
        "127.0.0.1:0".parse().unwrap(),
        LinkConfig {
            upstream,
            up,
            down,
            seed: 7,
        },
    )
    .await
    .unwrap()
}

/// Writes `data` and reads as many bytes back.
async fn round_trip(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = s.split();
    let mut back = vec![0u8; data.len()];
    let (wrote, read) = tokio::join!(w.write_all(data), r.read_exact(&mut back));
    wrote.unwrap();
    read.unwrap();
    back
}

#[tokio::test]
async fn each_direction_is_delayed_and_bytes_arrive_intact() {
    tokio::time::timeout(BOUND, async {
        let l = link(
            Direction::delay(Duration::from_millis(30)),
            Direction {
                jitter: Duration::from_millis(5),
                ..Direction::delay(Duration::from_millis(20))
            },
        )
        .await;
        let mut s = TcpStream::connect(l.addr()).await.unwrap();
        let started = Instant::now();
        assert_eq!(round_trip(&mut s, b"ping").await, b"ping");
        // 30 ms up and at least 15 ms down.
        assert!(
            started.elapsed() >= Duration::from_millis(45),
            "{:?}",
            started.elapsed()
        );
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        assert_eq!(round_trip(&mut s, &data).await, data);
        let stats = l.handle().stats();
        assert_eq!(stats.connections, 1);
        assert_eq!(stats.up_bytes, 300_004);
        assert_eq!(stats.down_bytes, 300_004);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_bandwidth_cap_paces_the_transfer() {
    tokio::time::timeout(BOUND, async {
        // 1 MB/s up, unlimited down: 400 kB need at least 0.4 s.
        let l = link(
            Direction {
                bandwidth: Some(1e6),
                ..Direction::delay(Duration::ZERO)
            },
            Direction::delay(Duration::ZERO),
        )
        .await;
        let mut s = TcpStream::connect(l.addr()).await.unwrap();
        let data = vec![7u8; 400_000];
        let started = Instant::now();
        assert_eq!(round_trip(&mut s, &data).await, data);
        assert!(
            started.elapsed() >= Duration::from_millis(390),
            "{:?}",
            started.elapsed()
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_silent_cut_holds_bytes_until_the_link_returns() {
    tokio::time::timeout(BOUND, async {
        let l = link(
            Direction::delay(Duration::ZERO),
            Direction::delay(Duration::ZERO),
        )
        .await;
        let mut s = TcpStream::connect(l.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"a").await, b"a");
        l.handle().cut(LinkState::Silent);
        s.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        let silent = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await;
        assert!(silent.is_err(), "nothing passes a cut link");
        l.handle().restore();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"held", "TCP rides out the outage");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_reset_closes_connections_until_restored() {
    tokio::time::timeout(BOUND, async {
        let l = link(
            Direction::delay(Duration::ZERO),
            Direction::delay(Duration::ZERO),
        )
        .await;
        let mut s = TcpStream::connect(l.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"a").await, b"a");
        l.handle().cut(LinkState::Reset);
        let mut buf = [0u8; 1];
        assert!(
            matches!(s.read(&mut buf).await, Ok(0) | Err(_)),
            "the open connection is closed"
        );
        let mut fresh = TcpStream::connect(l.addr()).await.unwrap();
        let _ = fresh.write_all(b"x").await;
        assert!(
            matches!(fresh.read(&mut buf).await, Ok(0) | Err(_)),
            "a new one too"
        );
        l.handle().restore();
        let mut again = TcpStream::connect(l.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"back").await, b"back");
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn the_control_api_cuts_restores_and_counts() {
    tokio::time::timeout(BOUND, async {
        let l = link(
            Direction::delay(Duration::ZERO),
            Direction::delay(Duration::ZERO),
        )
        .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        let api_server = axum::serve(listener, control(l.handle()));
        tokio::spawn(async move { api_server.await });
        let http = reqwest::Client::new();
        let state: LinkState = http
            .post(format!("{api}/cut?mode=reset"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(state, LinkState::Reset);
        assert_eq!(l.handle().state(), LinkState::Reset);
        let state: LinkState = http
            .post(format!("{api}/cut"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(state, LinkState::Silent, "silent is the default cut");
        http.post(format!("{api}/restore")).send().await.unwrap();
        let mut s = TcpStream::connect(l.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"hello").await, b"hello");
        let stats: serde_json::Value = http
            .get(format!("{api}/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["state"], "up");
        assert_eq!(stats["stats"]["up_bytes"], 5);
        assert_eq!(stats["stats"]["connections"], 1);
        let bad = http
            .post(format!("{api}/cut?mode=sideways"))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
    })
    .await
    .expect("bounded");
}
