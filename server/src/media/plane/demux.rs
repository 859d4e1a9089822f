//! Which leg a datagram belongs to, for a worker's one socket: STUN by the
//! local ufrag in its USERNAME attribute, everything else by the remote
//! address. Two hash lookups at most; nothing here allocates or creates
//! state for a datagram. Addresses are learned only from what a leg itself
//! sends (str0m answers a binding request only after checking its
//! integrity), so a datagram from an unknown address that is not STUN for
//! a known ufrag is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::LegId;

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// Whether `buf` looks like a STUN message (RFC 7983: first byte 0..=3,
/// the magic cookie, a 20-byte header).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[0] < 4 && buf[4..8] == MAGIC_COOKIE
}

/// The local part of a STUN message's USERNAME (`local:remote` in a
/// request to us), if `buf` is well-formed STUN that carries one.
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    if !is_stun(buf) {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let mut attrs = buf.get(20..20 + len)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let vlen = u16::from_be_bytes([attrs[2], attrs[3]]) as usize;
        let value = attrs.get(4..4 + vlen)?;
        if kind == ATTR_USERNAME {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next();
        }
        let padded = (vlen + 3) & !3;
        attrs = attrs.get(4 + padded..).unwrap_or(&[]);
    }
    None
}

/// The worker's routing tables.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: HashMap<Box<str>, LegId>,
    by_addr: HashMap<SocketAddr, LegId>,
    /// Per leg: its ufrag and the addresses learned for it (for release).
    of_leg: HashMap<LegId, (Box<str>, Vec<SocketAddr>)>,
}

impl Demux {
    pub fn new() -> Demux {
        Demux::default()
    }

    /// The leg a datagram from `from` belongs to, if any.
    pub fn route(&self, from: SocketAddr, buf: &[u8]) -> Option<LegId> {
        if let Some(ufrag) = stun_local_ufrag(buf) {
            return self.by_ufrag.get(ufrag).copied();
        }
        self.by_addr.get(&from).copied()
    }

    /// A new leg with its local ufrag. False if the ufrag is taken.
    pub fn add_leg(&mut self, leg: LegId, ufrag: &str) -> bool {
        if self.by_ufrag.contains_key(ufrag) || self.of_leg.contains_key(&leg) {
            return false;
        }
        self.by_ufrag.insert(ufrag.into(), leg);
        self.of_leg.insert(leg, (ufrag.into(), Vec::new()));
        true
    }

    /// `leg` sent to `addr`: datagrams from there are its own. A newer
    /// (validated) leg takes an address over from an older one.
    pub fn learn(&mut self, addr: SocketAddr, leg: LegId) {
        if self.by_addr.get(&addr) == Some(&leg) {
            return;
        }
        let Some((_, addrs)) = self.of_leg.get_mut(&leg) else { return };
        addrs.push(addr);
        if let Some(old) = self.by_addr.insert(addr, leg)
            && let Some((_, old_addrs)) = self.of_leg.get_mut(&old)
        {
            old_addrs.retain(|a| *a != addr);
        }
    }

    /// Forgets `leg` and everything learned for it.
    pub fn remove_leg(&mut self, leg: LegId) {
        if let Some((ufrag, addrs)) = self.of_leg.remove(&leg) {
            self.by_ufrag.remove(&ufrag);
            for a in addrs {
                if self.by_addr.get(&a) == Some(&leg) {
                    self.by_addr.remove(&a);
                }
            }
        }
    }

    /// (legs, ufrags, addresses) held.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.of_leg.len(), self.by_ufrag.len(), self.by_addr.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn stun_is_routed_by_ufrag_and_the_rest_by_learned_address() {
        let mut d = Demux::new();
        assert!(d.add_leg(1, "abcd"));
        let a: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert_eq!(d.route(a, &binding_request("abcd:xyz")), Some(1));
        assert_eq!(d.route(a, &binding_request("nope:xyz")), None);
        assert_eq!(d.route(a, &[0x80, 0x60, 0, 1]), None);
        d.learn(a, 1);
        assert_eq!(d.route(a, &[0x80, 0x60, 0, 1]), Some(1));
        d.remove_leg(1);
        assert_eq!(d.sizes(), (0, 0, 0));
        assert_eq!(d.route(a, &binding_request("abcd:xyz")), None);
    }

    #[test]
    fn truncated_stun_has_no_ufrag() {
        let m = binding_request("abcd:xyz");
        for n in 0..m.len() {
            assert_eq!(stun_local_ufrag(&m[..n]), None, "{n} bytes");
        }
        assert_eq!(stun_local_ufrag(&m), Some("abcd"));
    }
}
