//! A network namespace joined to the host by a veth pair, for a "host" that can be cut off
//! from the etcd cluster and joined again (`ip link set … down/up`): a real partition on one
//! machine. Needs root and iproute2; removed (namespace and veth) on drop.

use std::process::Command;

use super::unique;

pub struct Netns {
    pub name: String,
    host_if: String,
    /// The host side's address: what the namespace reaches the cluster on.
    pub host_ip: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().is_ok_and(|s| s.success())
}

impl Netns {
    /// Whether this machine lets the test make one (root, iproute2).
    pub fn available() -> bool {
        nix_is_root() && Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success())
    }

    pub fn new() -> Netns {
        let u = unique();
        let k = u % 250 + 1;
        let n = Netns { name: format!("ccci-p{u}"), host_if: format!("vh{u}"), host_ip: format!("10.231.{k}.1") };
        let peer = format!("vn{u}");
        let ns_ip = format!("10.231.{k}.2/30");
        let host_cidr = format!("{}/30", n.host_ip);
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &n.name],
            vec!["link", "add", &n.host_if, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", &peer, "netns", &n.name],
            vec!["addr", "add", &host_cidr, "dev", &n.host_if],
            vec!["link", "set", &n.host_if, "up"],
            vec!["-n", &n.name, "addr", "add", &ns_ip, "dev", &peer],
            vec!["-n", &n.name, "link", "set", &peer, "up"],
            vec!["-n", &n.name, "link", "set", "lo", "up"],
        ];
        for s in steps {
            assert!(ip(&s), "ip {} failed", s.join(" "));
        }
        n
    }

    /// Cuts the namespace off (its veth down).
    pub fn cut(&self) {
        assert!(ip(&["link", "set", &self.host_if, "down"]));
    }

    pub fn heal(&self) {
        assert!(ip(&["link", "set", &self.host_if, "up"]));
    }

    /// `cmd` run inside the namespace (`ip netns exec` execs it: the pid is the program's),
    /// with exactly the environment `cmd` was given.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(cmd.get_program()).args(cmd.get_args()).env_clear();
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid(2) has no side effects.
    unsafe { libc::geteuid() == 0 }
}
