//! Hosts, routers and NATs made of Linux network namespaces, for tests and benchmarks that run
//! the real `tapes` binary across networks (issue "Reach").
//!
//! - [`Netns`]: a set of namespaces named `tapes-<pid>-<n>-<role>`, each with loopback up;
//!   [`Netns::exec`] runs a command in one (`ip netns exec`), [`in_ns`] runs a closure on a
//!   thread that entered one (sockets made there stay there), and dropping the set kills what
//!   still runs inside its namespaces and deletes them.
//! - [`Nat`]: an "internet" (a bridge on 203.0.113.0/24), a relay host at 203.0.113.3, and
//!   alice and bob each on a private LAN behind a router that masquerades (iptables), with no
//!   route between the LANs. [`Nat::drop_udp_between_routers`] leaves only the relay path.
//! - [`Lan`]: two hosts on one veth pair (10.77.0.1 and 10.77.0.2), the plain reference.
//! - [`Person`] runs `tapes` as one person (own `TAPES_HOME`, fixed environment) inside a
//!   namespace; [`Daemon`] is a long-running one (`serve`, `relay`), killed on drop.
//!
//! Needs root, iproute2 and iptables; [`Netns::new`] says which is missing. Nothing leaves the
//! namespaces: none has a route beyond the addresses built here.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A set of network namespaces, deleted on drop.
pub struct Netns {
    tag: String,
    names: Vec<String>,
}

impl Netns {
    /// An empty set; Err says why namespaces cannot be built here (not root, no `ip`, no
    /// `iptables`).
    pub fn new() -> Result<Netns, String> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
            let found = Command::new(tool)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok();
            if !found {
                return Err(format!(
                    "`{tool}` is not installed (apt-get install {package})"
                ));
            }
        }
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        Ok(Netns {
            tag: format!("tapes-{}-{n}", std::process::id()),
            names: Vec::new(),
        })
    }

    /// Adds namespace `<tag>-<role>` with loopback up; returns its name.
    pub fn add(&mut self, role: &str) -> Result<String, String> {
        let name = format!("{}-{role}", self.tag);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        self.names.push(name.clone());
        self.ip(&name, &["link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// The namespaces, in the order they were added.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<(), String> {
        run(Command::new("ip").arg("-n").arg(ns).args(args))
    }

    /// A veth pair: `a_dev` in `a`, `b_dev` in `b`, both up. Interface names live in their
    /// namespace, so the same names can be used by every test at once.
    pub fn veth(&self, a: &str, a_dev: &str, b: &str, b_dev: &str) -> Result<(), String> {
        self.ip(
            a,
            &[
                "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b,
            ],
        )?;
        self.ip(a, &["link", "set", a_dev, "up"])?;
        self.ip(b, &["link", "set", b_dev, "up"])
    }

    /// `<cmd>` inside `ns`, checked: Err carries its stderr.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Result<String, String> {
        let out = exec_output(ns, cmd, &[], Duration::from_secs(30))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`{}` in {ns} failed: {}",
                cmd.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `iptables <args>` inside `ns`.
    pub fn iptables(&self, ns: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = vec!["iptables", "-w"];
        cmd.extend_from_slice(args);
        self.exec(ns, &cmd).map(drop)
    }

    /// Turns `ns` into a router (IPv4 forwarding on).
    pub fn forward(&self, ns: &str) -> Result<(), String> {
        self.exec(ns, &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
            .map(drop)
    }

    /// The processes still running in `ns` (everything in it was started by this harness).
    fn pids(ns: &str) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", ns])
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            for pid in Netns::pids(ns) {
                // SAFETY: kill has no memory preconditions; the pid runs in our namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `cmd` inside `ns` with extra environment, killing it after `timeout`.
pub fn exec_output(
    ns: &str,
    cmd: &[&str],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Output, String> {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).args(cmd);
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run `ip netns exec`: {e}"))?;
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`{}` in {ns} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                cmd.join(" "),
                String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                String::from_utf8_lossy(&stderr.join().unwrap_or_default()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Runs `f` on a thread inside network namespace `ns` and returns what it returns. Sockets
/// made in `f` belong to `ns` for their whole life, wherever they are used afterwards.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file =
                std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

/// Connects over TCP from `from` to `to` in namespace `to_ns` (a one-shot listener there) and
/// returns the source address the listener saw; Err when the connection cannot be made
/// within `timeout`.
pub fn tcp_seen_from(
    from: &str,
    to_ns: &str,
    to: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, String> {
    let listener = in_ns(to_ns, || TcpListener::bind(to)).map_err(|e| format!("bind {to}: {e}"))?;
    let stream = in_ns(from, || TcpStream::connect_timeout(&to, timeout))
        .map_err(|e| format!("connect {to}: {e}"))?;
    let (_conn, seen) = listener.accept().map_err(|e| e.to_string())?;
    drop(stream);
    Ok(seen)
}

/// Whether anything answers TCP at `to` from `from` (a refused connection came back from the
/// host, so that counts as reached); Err says what failed.
pub fn tcp_reaches(from: &str, to: SocketAddr, timeout: Duration) -> Result<(), String> {
    match in_ns(from, || TcpStream::connect_timeout(&to, timeout)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends a few UDP datagrams from `from` to `to` (bound in `to_ns`); true when one arrived.
pub fn udp_delivered(from: &str, to_ns: &str, to: SocketAddr, timeout: Duration) -> bool {
    let receiver = in_ns(to_ns, || UdpSocket::bind(to)).expect("bind the UDP probe");
    receiver.set_read_timeout(Some(timeout)).unwrap();
    let sender = in_ns(from, || {
        UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)))
    })
    .expect("bind the UDP sender");
    for _ in 0..3 {
        // Unreachable networks fail right here; the datagram simply does not arrive then.
        let _ = sender.send_to(b"probe", to);
    }
    let mut buf = [0u8; 16];
    matches!(receiver.recv_from(&mut buf), Ok((5, _)))
}

/// Copies `bytes` over one TCP connection from `from` to a listener at `to` in `to_ns`; the
/// time from connecting until the receiver has read the last byte.
pub fn tcp_copy(from: &str, to_ns: &str, to: SocketAddr, bytes: u64) -> Result<Duration, String> {
    use std::io::Write;
    let listener = in_ns(to_ns, || TcpListener::bind(to)).map_err(|e| format!("bind {to}: {e}"))?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let start = Instant::now();
    let mut stream = in_ns(from, || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })
    .map_err(|e| format!("connect {to}: {e}"))?;
    let chunk = vec![0x5au8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    drop(stream);
    let got = reader
        .join()
        .map_err(|_| "the reader panicked".to_string())?
        .map_err(|e| e.to_string())?;
    if got != bytes {
        return Err(format!("sent {bytes} bytes, {got} arrived"));
    }
    Ok(start.elapsed())
}

/// Waits until TCP `to` answers from `from` (e.g. a server that just started), up to `timeout`.
pub fn wait_tcp(from: &str, to: SocketAddr, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match in_ns(from, || {
            TcpStream::connect_timeout(&to, Duration::from_secs(1))
        }) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() > timeout => return Err(format!("{to}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
pub const ALICE_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const BOB_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
pub const ALICE_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
pub const BOB_IP: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);

/// Two homes behind their own masquerading routers on a small internet with a relay host:
///
/// ```text
///   alice 10.1.0.2 ── 10.1.0.1 [router a] 203.0.113.10 ─┐
///                                                       ├─ br0 (internet) ── 203.0.113.3 relay
///   bob   10.2.0.2 ── 10.2.0.1 [router b] 203.0.113.20 ─┘
/// ```
///
/// The routers know only their two subnets (no default route), so nothing addressed to a
/// private network on the other side gets anywhere, and nothing leaves 203.0.113.0/24.
pub struct Nat {
    pub internet: String,
    pub relay: String,
    pub alice_router: String,
    pub alice: String,
    pub bob_router: String,
    pub bob: String,
    /// Last: dropped after the names above are no longer needed.
    pub net: Netns,
}

impl Nat {
    pub fn build() -> Result<Nat, String> {
        let mut net = Netns::new()?;
        let internet = net.add("inet")?;
        let relay = net.add("relay")?;
        let alice_router = net.add("ra")?;
        let alice = net.add("alice")?;
        let bob_router = net.add("rb")?;
        let bob = net.add("bob")?;

        net.ip(&internet, &["link", "add", "br0", "type", "bridge"])?;
        net.ip(&internet, &["link", "set", "br0", "up"])?;
        // The relay host on the internet.
        net.veth(&relay, "eth0", &internet, "relay")?;
        net.ip(&internet, &["link", "set", "relay", "master", "br0"])?;
        net.ip(&relay, &["addr", "add", "203.0.113.3/24", "dev", "eth0"])?;

        for (router, host, wan, port, lan_net) in [
            (&alice_router, &alice, ALICE_WAN, "alice", 1),
            (&bob_router, &bob, BOB_WAN, "bob", 2),
        ] {
            net.veth(router, "wan", &internet, port)?;
            net.ip(&internet, &["link", "set", port, "master", "br0"])?;
            net.ip(router, &["addr", "add", &format!("{wan}/24"), "dev", "wan"])?;
            net.veth(router, "lan", host, "eth0")?;
            net.ip(
                router,
                &["addr", "add", &format!("10.{lan_net}.0.1/24"), "dev", "lan"],
            )?;
            net.ip(
                host,
                &[
                    "addr",
                    "add",
                    &format!("10.{lan_net}.0.2/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            net.ip(
                host,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.{lan_net}.0.1"),
                ],
            )?;
            net.forward(router)?;
            net.iptables(
                router,
                &[
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "wan",
                    "-j",
                    "MASQUERADE",
                ],
            )?;
        }
        Ok(Nat {
            internet,
            relay,
            alice_router,
            alice,
            bob_router,
            bob,
            net,
        })
    }

    /// Drops every UDP packet between the two routers' WAN addresses, both ways, so hole
    /// punching cannot work and only the relay (TCP) path is left. Each router filters what
    /// it forwards: outgoing packets still carry the private source there (masquerading
    /// happens after), incoming ones still carry the other router's source.
    pub fn drop_udp_between_routers(&self) -> Result<(), String> {
        for (router, other) in [(&self.alice_router, BOB_WAN), (&self.bob_router, ALICE_WAN)] {
            let other = other.to_string();
            for dir in ["-d", "-s"] {
                self.net.iptables(
                    router,
                    &["-A", "FORWARD", "-p", "udp", dir, &other, "-j", "DROP"],
                )?;
            }
            // The router's own traffic too (nothing of ours runs there, but be complete).
            self.net.iptables(
                router,
                &["-A", "OUTPUT", "-p", "udp", "-d", &other, "-j", "DROP"],
            )?;
            self.net.iptables(
                router,
                &["-A", "INPUT", "-p", "udp", "-s", &other, "-j", "DROP"],
            )?;
        }
        Ok(())
    }

    /// Checks the topology does what it claims: both homes reach the relay host from their
    /// router's public address (masqueraded), neither reaches the other's private address,
    /// and UDP between the homes' public sides gets through unless `udp_dropped`.
    pub fn check(&self, udp_dropped: bool) -> Result<(), String> {
        let t = Duration::from_secs(2);
        let relay = |port| SocketAddr::from((RELAY_IP, port));
        for (host, wan) in [(&self.alice, ALICE_WAN), (&self.bob, BOB_WAN)] {
            let seen = tcp_seen_from(host, &self.relay, relay(9901), t)?;
            if seen.ip() != IpAddr::V4(wan) {
                return Err(format!(
                    "{host} reached the relay host as {seen}, not masqueraded as {wan}"
                ));
            }
            if !udp_delivered(host, &self.relay, relay(9902), t) {
                return Err(format!("UDP from {host} does not reach the relay host"));
            }
        }
        for (from, to) in [(&self.bob, ALICE_IP), (&self.alice, BOB_IP)] {
            let to = SocketAddr::from((to, 9903));
            if tcp_reaches(from, to, Duration::from_secs(1)).is_ok() {
                return Err(format!("{from} reaches the private address {to}"));
            }
        }
        let (alice_to, bob_to) = (
            SocketAddr::from((ALICE_IP, 9904)),
            SocketAddr::from((BOB_IP, 9904)),
        );
        if udp_delivered(&self.bob, &self.alice, alice_to, Duration::from_millis(500)) {
            return Err(format!("UDP from bob reaches alice's private {alice_to}"));
        }
        if udp_delivered(&self.alice, &self.bob, bob_to, Duration::from_millis(500)) {
            return Err(format!("UDP from alice reaches bob's private {bob_to}"));
        }
        // The other router's public side, from each home (UDP is what hole punching uses).
        for (from, router, wan) in [
            (&self.alice, &self.bob_router, BOB_WAN),
            (&self.bob, &self.alice_router, ALICE_WAN),
        ] {
            let to = SocketAddr::from((wan, 9905));
            let through = udp_delivered(from, router, to, Duration::from_millis(700));
            if through == udp_dropped {
                return Err(format!(
                    "UDP from {from} to the other router {to}: {}",
                    if through {
                        "gets through though dropped"
                    } else {
                        "does not get through"
                    }
                ));
            }
        }
        Ok(())
    }
}

/// Two hosts on one veth pair, 10.77.0.1/24 and 10.77.0.2/24: the plain-LAN reference.
pub struct Lan {
    pub a: String,
    pub b: String,
    pub net: Netns,
}

impl Lan {
    pub fn build() -> Result<Lan, String> {
        let mut net = Netns::new()?;
        let a = net.add("lana")?;
        let b = net.add("lanb")?;
        net.veth(&a, "eth0", &b, "eth0")?;
        net.ip(&a, &["addr", "add", "10.77.0.1/24", "dev", "eth0"])?;
        net.ip(&b, &["addr", "add", "10.77.0.2/24", "dev", "eth0"])?;
        Ok(Lan { a, b, net })
    }
}

/// One person running `tapes` in a namespace: a home and the environment every run gets.
#[derive(Clone)]
pub struct Person {
    pub name: String,
    pub ns: String,
    pub home: PathBuf,
    pub env: Vec<(String, String)>,
    pub bin: PathBuf,
    pub timeout: Duration,
}

/// What one `tapes` run gave.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Person {
    /// `tapes init --name <name>` with home `dir/<name>`; every later run gets `env`.
    pub fn init(
        bin: &Path,
        ns: &str,
        dir: &Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> Result<Person, String> {
        let home = dir.join(name);
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("TAPES_HOME".into(), home.to_string_lossy().into_owned()));
        let person = Person {
            name: name.to_string(),
            ns: ns.to_string(),
            home,
            env,
            bin: bin.to_path_buf(),
            timeout: Duration::from_secs(60),
        };
        person.ok(&["init", "--name", name])?;
        Ok(person)
    }

    /// The same person (same home) running in namespace `ns` with `env` instead.
    pub fn moved(&self, ns: &str, env: &[(&str, &str)]) -> Person {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push((
            "TAPES_HOME".into(),
            self.home.to_string_lossy().into_owned(),
        ));
        Person {
            ns: ns.to_string(),
            env,
            ..self.clone()
        }
    }

    /// `tapes <args>`, whatever its exit code.
    pub fn tapes(&self, args: &[&str]) -> Result<Out, String> {
        let bin = self.bin.to_string_lossy().into_owned();
        let mut cmd = vec![bin.as_str()];
        cmd.extend_from_slice(args);
        let start = Instant::now();
        let out = exec_output(&self.ns, &cmd, &self.env, self.timeout)?;
        Ok(Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: start.elapsed(),
        })
    }

    /// `tapes <args>`, which must exit 0; its stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.tapes(args)?;
        if out.code == 0 {
            Ok(out.stdout)
        } else {
            Err(format!(
                "{}: `tapes {}` in {} exited {}\nstdout: {}\nstderr: {}",
                self.name,
                args.join(" "),
                self.ns,
                out.code,
                out.stdout,
                out.stderr
            ))
        }
    }

    /// Runs `tapes <args>` until `until` is true or `deadline` passes; the last result.
    pub fn retry(
        &self,
        args: &[&str],
        deadline: Duration,
        until: impl Fn(&Out) -> bool,
    ) -> Result<Out, String> {
        let start = Instant::now();
        loop {
            let out = self.tapes(args)?;
            if until(&out) || start.elapsed() > deadline {
                return Ok(out);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `tapes id`'s node id.
    pub fn node_id(&self) -> Result<String, String> {
        let id = self.ok(&["id"])?;
        id.lines()
            .find_map(|l| l.strip_prefix("node id: "))
            .map(|s| s.trim().to_string())
            .ok_or_else(|| format!("`tapes id` prints no node id: {id}"))
    }

    /// Imports `count` generated Claude sessions of `shape` (seeds from `seed`); the ids of
    /// every session this person has, and the bytes of the transcripts imported.
    pub fn import_samples(
        &self,
        dir: &Path,
        seed: u64,
        count: usize,
        shape: tapes::session::sample::Shape,
    ) -> Result<(Vec<String>, u64), String> {
        let files = dir.join(format!("{}-samples-{seed}", self.name));
        std::fs::create_dir_all(&files).map_err(|e| e.to_string())?;
        let mut bytes = 0;
        for i in 0..count {
            let session = tapes::session::sample::session(seed, i, shape);
            let text = tapes::session::sample::claude_jsonl(&session);
            bytes += text.len() as u64;
            std::fs::write(files.join(format!("{i}.jsonl")), text).map_err(|e| e.to_string())?;
        }
        self.ok(&["import", &files.to_string_lossy()])?;
        let list = self.ok(&["sessions", "--json"])?;
        let value: serde_json::Value = serde_json::from_str(&list).map_err(|e| e.to_string())?;
        let ids = value
            .as_array()
            .ok_or("`tapes sessions --json` is not a list")?
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect();
        Ok((ids, bytes))
    }

    /// `tapes <args>` left running, once a line starting with `ready` was printed; the lines
    /// printed until then.
    pub fn spawn(&self, args: &[&str], ready: &str, timeout: Duration) -> Result<Daemon, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // `ip netns exec` execs the program, so the child is tapes itself.
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let stderr = child.stderr.take().unwrap();
        let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let errors2 = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut e = errors2.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            // Keeps draining after `ready` so the daemon never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            child,
            lines: Vec::new(),
            errors,
        };
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with(ready);
                    daemon.lines.push(line);
                    if done {
                        std::thread::spawn(move || for _ in rx {});
                        return Ok(daemon);
                    }
                }
                Err(_) => {
                    let _ = daemon.child.kill();
                    let _ = daemon.child.wait();
                    return Err(format!(
                        "{}: `tapes {}` in {} did not print `{ready}` within {timeout:?}\nstdout: {}\nstderr: {}",
                        self.name,
                        args.join(" "),
                        self.ns,
                        daemon.lines.join("\n"),
                        daemon.errors.lock().unwrap()
                    ));
                }
            }
        }
    }
}

/// A long-running `tapes` (serve, relay), killed on drop.
pub struct Daemon {
    pub child: Child,
    /// Stdout up to and including the ready line.
    pub lines: Vec<String>,
    errors: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// The rest of the first printed line starting with `prefix`.
    pub fn line(&self, prefix: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| l.strip_prefix(prefix))
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One router namespace with hosts around it, each on its own /24 (issue 21, the hostile
/// network): host `i` (0-based, in the order given) is `10.91.<i+1>.2` on its `eth0`, with a
/// default route via `10.91.<i+1>.1`, the router's end, which the router calls by the host's
/// role. Everything between two hosts crosses the router's FORWARD chain, where a test drops,
/// cuts or partitions (iptables), and the router's egress toward a host, where it can shape
/// (`tc … tbf`). Nothing is masqueraded and nothing leaves 10.91.0.0/16.
pub struct Star {
    pub router: String,
    /// (role, namespace, address), in the order given.
    pub hosts: Vec<(String, String, Ipv4Addr)>,
    /// Last: dropped after the names above are no longer needed.
    pub net: Netns,
}

impl Star {
    pub fn build(roles: &[&str]) -> Result<Star, String> {
        let mut net = Netns::new()?;
        let router = net.add("router")?;
        let mut hosts = Vec::new();
        for (i, role) in roles.iter().enumerate() {
            let ns = net.add(role)?;
            let subnet = i + 1;
            net.veth(&router, role, &ns, "eth0")?;
            net.ip(
                &router,
                &["addr", "add", &format!("10.91.{subnet}.1/24"), "dev", role],
            )?;
            net.ip(
                &ns,
                &[
                    "addr",
                    "add",
                    &format!("10.91.{subnet}.2/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            net.ip(
                &ns,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.91.{subnet}.1"),
                ],
            )?;
            hosts.push((role.to_string(), ns, Ipv4Addr::new(10, 91, subnet as u8, 2)));
        }
        net.forward(&router)?;
        Ok(Star { router, hosts, net })
    }

    /// The namespace of the host called `role`.
    pub fn ns(&self, role: &str) -> &str {
        &self.host(role).1
    }

    /// The address of the host called `role`.
    pub fn ip(&self, role: &str) -> Ipv4Addr {
        self.host(role).2
    }

    /// The router's address on the link to `role` (its gateway).
    pub fn gateway(&self, role: &str) -> Ipv4Addr {
        let [a, b, c, _] = self.ip(role).octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    fn host(&self, role: &str) -> &(String, String, Ipv4Addr) {
        self.hosts
            .iter()
            .find(|(r, _, _)| r == role)
            .unwrap_or_else(|| panic!("no host called {role} in this star"))
    }

    /// `iptables <args>` in the router.
    pub fn router_iptables(&self, args: &[&str]) -> Result<(), String> {
        self.net.iptables(&self.router, args)
    }

    /// Bytes the router has sent toward `role` so far (its egress on that link).
    pub fn bytes_toward(&self, role: &str) -> Result<u64, String> {
        let out = self.net.exec(
            &self.router,
            &["ip", "-j", "-s", "link", "show", "dev", role],
        )?;
        let value: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("`ip -j -s link`: {e}: {out}"))?;
        value[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .ok_or_else(|| format!("`ip -j -s link` shows no tx bytes: {out}"))
    }

    /// Packets matched so far by the first rule of the router's FORWARD chain (e.g. the DROP a
    /// test inserted), from `iptables -L FORWARD -v -x -n`.
    pub fn dropped_by_first_rule(&self) -> Result<u64, String> {
        let out = self.net.exec(
            &self.router,
            &["iptables", "-w", "-L", "FORWARD", "-v", "-x", "-n"],
        )?;
        // Two header lines, then one line per rule: pkts bytes target ...
        out.lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no first rule in the FORWARD chain:\n{out}"))
    }

    /// Packets the router has received so far on its links to the hosts.
    pub fn packets_in(&self) -> Result<u64, String> {
        let out = self
            .net
            .exec(&self.router, &["ip", "-j", "-s", "link", "show"])?;
        let value: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("`ip -j -s link`: {e}: {out}"))?;
        Ok(value
            .as_array()
            .into_iter()
            .flatten()
            .filter(|link| {
                self.hosts
                    .iter()
                    .any(|(role, _, _)| link["ifname"] == *role)
            })
            .filter_map(|link| link["stats64"]["rx"]["packets"].as_u64())
            .sum())
    }
}
