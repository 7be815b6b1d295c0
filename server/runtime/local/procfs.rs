//! What `/proc` says about a process tree: its members (found by parent pid, since this kernel
//! may lack `/proc/PID/task/TID/children`), the sockets they hold, and which sockets listen on a
//! TCP port. Both the supervisor (to signal its tree) and the server (readiness, the last-resort
//! kill) use it; every read tolerates processes that vanish half-way.

use std::collections::{HashMap, HashSet};

use nix::unistd::Pid;

/// Every live descendant of `root` (not `root` itself), parents before their children.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut tree = Vec::new();
    let mut next = vec![root.as_raw()];
    while let Some(pid) = next.pop() {
        if let Some(kids) = children.remove(&pid) {
            tree.extend(kids.iter().copied().map(Pid::from_raw));
            next.extend(kids);
        }
    }
    tree
}

/// Every child of `parent`, zombies included (they are children to reap).
pub fn children(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()))
        .filter(|&pid| stat_fields(pid).is_some_and(|(_, ppid)| ppid == parent.as_raw()))
        .map(Pid::from_raw)
        .collect()
}

/// The state letter and the parent pid in `/proc/PID/stat`.
fn stat_fields(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or parentheses itself: the fields
    // that follow start after the last `)`.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// The parent pid in `/proc/PID/stat`, or `None` when the process is gone or a zombie (a zombie
/// needs no signal, only reaping).
fn parent_of(pid: i32) -> Option<i32> {
    let (state, parent) = stat_fields(pid)?;
    (state != 'Z' && state != 'X').then_some(parent)
}

/// The inodes of the sockets among the open files of `pids`.
pub fn socket_inodes(pids: impl IntoIterator<Item = Pid>) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for entry in entries.flatten() {
            if let Ok(target) = std::fs::read_link(entry.path())
                && let Some(inode) = target
                    .to_str()
                    .and_then(|target| target.strip_prefix("socket:["))
                    .and_then(|rest| rest.strip_suffix(']'))
                    .and_then(|inode| inode.parse().ok())
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// The inodes of the TCP sockets in LISTEN state, by port.
pub type Listening = HashMap<u16, HashSet<u64>>;

/// The TCP sockets (IPv4 and IPv6) in LISTEN state, from `/proc/net/tcp` and `/proc/net/tcp6`
/// of the server's network namespace. Each read costs the kernel a walk of its whole socket hash
/// table (about a millisecond), so callers share one result between probes.
pub fn listening_inodes() -> Listening {
    let mut listening = Listening::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for (port, inode) in text.lines().skip(1).filter_map(parse_listening) {
            listening.entry(port).or_default().insert(inode);
        }
    }
    listening
}

/// The local port and inode of one line of `/proc/net/tcp{,6}` when its socket listens.
fn parse_listening(line: &str) -> Option<(u16, u64)> {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    let fields: Vec<&str> = line.split_whitespace().take(10).collect();
    let [_, local, _, state, _, _, _, _, _, inode] = fields.as_slice() else { return None };
    // 0A is TCP_LISTEN in the kernel's enumeration of socket states.
    if *state != "0A" {
        return None;
    }
    let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
    Some((port, inode.parse().ok()?))
}

/// Whether the tree of `root` (itself included) listens on every one of `ports`: a socket of one
/// of its processes is among the `listening` ones of that port. A port someone else serves does
/// not count.
pub fn tree_listens(root: Pid, ports: &[u16], listening: &Listening) -> bool {
    if ports.is_empty() {
        return true;
    }
    // Most probes of a process that is not ready end here, without walking its tree.
    if ports.iter().any(|port| !listening.contains_key(port)) {
        return false;
    }
    let mut tree = descendants(root);
    tree.push(root);
    let held = socket_inodes(tree);
    ports.iter().all(|port| listening.get(port).is_some_and(|inodes| !inodes.is_disjoint(&held)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_are_parsed_and_others_skipped() {
        let listen = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0";
        let established = "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 654321 1 0000000000000000 20 4 30 10 -1";
        let listen6 = "   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_listening(listen), Some((8080, 123456)));
        assert_eq!(parse_listening(established), None);
        assert_eq!(parse_listening(listen6), Some((80, 777)));
        assert_eq!(parse_listening("  sl  local_address rem_address   st"), None);
    }

    #[test]
    fn the_tree_of_a_listener_is_found_and_a_foreign_listener_is_not_ours() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let me = nix::unistd::getpid();
        assert!(tree_listens(me, &[port], &listening_inodes()));
        // A sleeping child of this test holds none of its sockets.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let child_pid = Pid::from_raw(child.id() as i32);
        assert!(descendants(me).contains(&child_pid));
        assert!(!tree_listens(child_pid, &[port], &listening_inodes()));
        let _ = child.kill();
        let _ = child.wait();
    }
}
