//! Address allocators: Service ClusterIPs from 10.96.0.0/12, NodePorts from 30000-32767 (or
//! the range of `--service-node-port-range`) and pod IPs from 10.244.0.0/14, each without
//! collisions and with release on deletion.

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Why an allocation failed; the store reports these as 422 Invalid on the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The requested value is already taken.
    #[error("provided {0} is already allocated")]
    Taken(&'static str),
    /// The requested value lies outside the range.
    #[error("provided {what} is not in the valid range. The range of valid {what}s is {range}")]
    OutOfRange { what: &'static str, range: String },
    /// Everything is taken.
    #[error("range is full")]
    Exhausted,
}

/// Hands out IPv4 addresses from a CIDR block.
#[derive(Debug, Clone)]
pub struct IpAllocator {
    base: u32,
    size: u32,
    reserved: u32,
    next: u32,
    used: HashSet<u32>,
    cidr: String,
}

impl IpAllocator {
    /// A pool over `base/prefix`, never giving out the first `reserved` offsets.
    pub fn new(base: Ipv4Addr, prefix: u32, reserved: u32) -> IpAllocator {
        let size = 1u32 << (32 - prefix);
        IpAllocator {
            base: u32::from(base),
            size,
            reserved,
            next: reserved,
            used: HashSet::new(),
            cidr: format!("{base}/{prefix}"),
        }
    }

    /// The next free address.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, AllocError> {
        let usable = self.size - self.reserved - 1;
        if self.used.len() as u32 >= usable {
            return Err(AllocError::Exhausted);
        }
        loop {
            let offset = self.next;
            self.next += 1;
            if self.next >= self.size - 1 {
                self.next = self.reserved;
            }
            if self.used.insert(offset) {
                return Ok(Ipv4Addr::from(self.base + offset));
            }
        }
    }

    /// Takes a specific address, as a Service with `spec.clusterIP` set asks.
    pub fn allocate_specific(&mut self, address: Ipv4Addr) -> Result<(), AllocError> {
        let value = u32::from(address);
        if value < self.base || value >= self.base + self.size {
            return Err(AllocError::OutOfRange { what: "IP", range: self.cidr.clone() });
        }
        if self.used.insert(value - self.base) { Ok(()) } else { Err(AllocError::Taken("IP")) }
    }

    /// Returns an address to the pool; unknown addresses are ignored.
    pub fn release(&mut self, address: Ipv4Addr) {
        let value = u32::from(address);
        if value >= self.base {
            self.used.remove(&(value - self.base));
        }
    }
}

/// Hands out ports from an inclusive range.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    low: u16,
    high: u16,
    next: u16,
    used: HashSet<u16>,
}

impl PortAllocator {
    /// A pool over `low..=high`.
    pub fn new(low: u16, high: u16) -> PortAllocator {
        PortAllocator { low, high, next: low, used: HashSet::new() }
    }

    /// The next free port.
    pub fn allocate(&mut self) -> Result<u16, AllocError> {
        if self.used.len() > usize::from(self.high - self.low) {
            return Err(AllocError::Exhausted);
        }
        loop {
            let port = self.next;
            self.next = if self.next >= self.high { self.low } else { self.next + 1 };
            if self.used.insert(port) {
                return Ok(port);
            }
        }
    }

    /// Takes a requested port, failing when it is out of range or taken.
    pub fn allocate_specific(&mut self, port: i64) -> Result<u16, AllocError> {
        let in_range = u16::try_from(port).ok().filter(|p| (self.low..=self.high).contains(p));
        let Some(port) = in_range else {
            return Err(AllocError::OutOfRange {
                what: "port",
                range: format!("{}-{}", self.low, self.high),
            });
        };
        if self.used.insert(port) { Ok(port) } else { Err(AllocError::Taken("port")) }
    }

    /// Returns a port to the pool.
    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

/// All allocators of one simulated cluster.
#[derive(Debug, Clone)]
pub struct Allocators {
    /// Service ClusterIPs.
    pub cluster_ips: IpAllocator,
    /// Service NodePorts.
    pub node_ports: PortAllocator,
    /// Pod IPs.
    pub pod_ips: IpAllocator,
}

impl Allocators {
    /// The allocators of a cluster whose NodePorts come from `low..=high`.
    pub fn with_node_port_range(low: u16, high: u16) -> Allocators {
        Allocators { node_ports: PortAllocator::new(low, high), ..Allocators::default() }
    }
}

impl Default for Allocators {
    fn default() -> Self {
        let mut cluster_ips = IpAllocator::new(Ipv4Addr::new(10, 96, 0, 0), 12, 1);
        // 10.96.0.1 is the `kubernetes` Service on real clusters; keep it out of the pool.
        let _ = cluster_ips.allocate_specific(Ipv4Addr::new(10, 96, 0, 1));
        Allocators {
            cluster_ips,
            node_ports: PortAllocator::new(30000, 32767),
            // A /14 (262,142 addresses, from 10.244.0.2 up) holds 150,000 pods; a /16
            // ran out at 65,533 and left the rest Pending without an IP.
            pod_ips: IpAllocator::new(Ipv4Addr::new(10, 244, 0, 0), 14, 2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ips_are_unique_and_reusable() {
        let mut allocators = Allocators::default();
        let first = allocators.cluster_ips.allocate().unwrap();
        let second = allocators.cluster_ips.allocate().unwrap();
        assert_ne!(first, second);
        assert_ne!(first, Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(allocators.cluster_ips.allocate_specific(first), Err(AllocError::Taken("IP")));
        allocators.cluster_ips.release(first);
        assert_eq!(allocators.cluster_ips.allocate_specific(first), Ok(()));
        assert!(allocators.cluster_ips.allocate_specific(Ipv4Addr::new(192, 168, 0, 1)).is_err());
    }

    #[test]
    fn node_ports_honour_requests_and_never_collide() {
        let mut ports = PortAllocator::new(30000, 30002);
        assert_eq!(ports.allocate_specific(30001), Ok(30001));
        assert_eq!(ports.allocate_specific(30001), Err(AllocError::Taken("port")));
        assert!(matches!(ports.allocate_specific(80), Err(AllocError::OutOfRange { .. })));
        let a = ports.allocate().unwrap();
        let b = ports.allocate().unwrap();
        assert_eq!([a, b], [30000, 30002]);
        assert_eq!(ports.allocate(), Err(AllocError::Exhausted));
        ports.release(30001);
        assert_eq!(ports.allocate(), Ok(30001));
    }
}
