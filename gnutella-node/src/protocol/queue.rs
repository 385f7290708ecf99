//! Per-connection prioritised output queue (notes §3 "Flow control / drops", after gtk-gnutella's mq).
//!
//! Messages leave highest priority first, FIFO within a priority. When the byte budget is exceeded the least
//! useful message goes: the lowest priority class first (vendor/unknown, Ping, Query, Pong, QueryHit, Push);
//! among queries the one with the most hops, among replies the one with the fewest. QRP and Bye are never
//! dropped; if only they are left and the budget is still exceeded the queue overflows (BYE 502, close).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::codec::{message as m, Descriptor};

/// A descriptor ready to go, with its wire bytes.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The descriptor.
    pub desc: Descriptor,
    /// Its encoding (header + payload).
    pub wire: Bytes,
}

const CLASSES: usize = 9;
const NEVER_DROP: u8 = 7;

fn priority(ptype: u8) -> u8 {
    match ptype {
        m::TYPE_PING => 1,
        m::TYPE_QUERY => 2,
        m::TYPE_PONG => 3,
        m::TYPE_QUERY_HIT => 4,
        m::TYPE_PUSH => 5,
        m::TYPE_QRP => 7,
        m::TYPE_BYE => 8,
        _ => 0,
    }
}

/// What happened to a pushed message.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, nothing dropped.
    Queued,
    /// Queued after dropping this many less useful messages.
    QueuedDropping(usize),
    /// The new message itself was the least useful and was dropped.
    DroppedNew,
    /// Nothing droppable is left: the connection must be closed (BYE 502).
    Overflow,
}

/// The queue.
#[derive(Debug)]
pub struct OutQueue {
    classes: [VecDeque<Outgoing>; CLASSES],
    bytes: usize,
    max_bytes: usize,
}

impl OutQueue {
    /// A queue holding at most `max_bytes` of wire data (a single larger message is still accepted).
    pub fn new(max_bytes: usize) -> OutQueue {
        OutQueue {
            classes: Default::default(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.classes.iter().map(VecDeque::len).sum()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0 && self.len() == 0
    }

    /// Empties the queue (before a Bye).
    pub fn clear(&mut self) {
        for c in &mut self.classes {
            c.clear();
        }
        self.bytes = 0;
    }

    /// Next message to write.
    pub fn pop(&mut self) -> Option<Outgoing> {
        let o = self
            .classes
            .iter_mut()
            .rev()
            .find_map(VecDeque::pop_front)?;
        self.bytes -= o.wire.len();
        Some(o)
    }

    /// Queues `o`, dropping less useful messages if over budget.
    pub fn push(&mut self, o: Outgoing) -> Pushed {
        let p = priority(o.desc.msg.payload_type()) as usize;
        let size = o.wire.len();
        let mut dropped = 0;
        while self.bytes + size > self.max_bytes && !self.is_empty() {
            // The lowest non-empty droppable class.
            let Some(c) = (0..NEVER_DROP as usize).find(|&c| !self.classes[c].is_empty()) else {
                if p >= NEVER_DROP as usize {
                    return Pushed::Overflow;
                }
                return Pushed::DroppedNew;
            };
            if c > p {
                return Pushed::DroppedNew;
            }
            let q = &self.classes[c];
            let victim = if c == priority(m::TYPE_QUERY) as usize || c < 2 {
                (0..q.len()).max_by_key(|&i| (q[i].desc.hops, i))
            } else {
                (0..q.len()).min_by_key(|&i| (q[i].desc.hops, std::cmp::Reverse(i)))
            }
            .expect("class is not empty");
            if c == p {
                // The new message competes with its own class.
                let worse_new = if c <= 2 {
                    o.desc.hops >= q[victim].desc.hops
                } else {
                    o.desc.hops <= q[victim].desc.hops
                };
                if worse_new {
                    return Pushed::DroppedNew;
                }
            }
            let v = self.classes[c].remove(victim).expect("index in range");
            self.bytes -= v.wire.len();
            dropped += 1;
        }
        self.bytes += size;
        self.classes[p].push_back(o);
        if dropped == 0 {
            Pushed::Queued
        } else {
            Pushed::QueuedDropping(dropped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::message::{Bye, Message, Ping, Query};
    use crate::codec::Guid;

    fn out(msg: Message, hops: u8) -> Outgoing {
        let desc = Descriptor {
            guid: Guid([hops; 16]),
            ttl: 1,
            hops,
            msg,
        };
        Outgoing {
            wire: desc.to_bytes(),
            desc,
        }
    }

    fn query(hops: u8) -> Outgoing {
        out(Message::Query(Query::new("abc", false)), hops)
    }

    #[test]
    fn higher_priority_leaves_first() {
        let mut q = OutQueue::new(10_000);
        q.push(query(0));
        q.push(out(Message::Ping(Ping::default()), 0));
        q.push(out(
            Message::Bye(Bye {
                code: 200,
                reason: String::new(),
            }),
            0,
        ));
        assert_eq!(q.pop().unwrap().desc.msg.payload_type(), m::TYPE_BYE);
        assert_eq!(q.pop().unwrap().desc.msg.payload_type(), m::TYPE_QUERY);
        assert_eq!(q.pop().unwrap().desc.msg.payload_type(), m::TYPE_PING);
        assert!(q.pop().is_none());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn drops_pings_then_the_query_with_most_hops() {
        let size = query(0).wire.len();
        let mut q = OutQueue::new(size * 3);
        assert_eq!(
            q.push(out(Message::Ping(Ping::default()), 0)),
            Pushed::Queued
        );
        assert_eq!(q.push(query(1)), Pushed::Queued);
        assert_eq!(q.push(query(5)), Pushed::Queued);
        assert_eq!(
            q.push(query(2)),
            Pushed::QueuedDropping(1),
            "the ping goes first"
        );
        assert_eq!(q.push(query(0)), Pushed::QueuedDropping(1));
        let hops: Vec<u8> = std::iter::from_fn(|| q.pop())
            .map(|o| o.desc.hops)
            .collect();
        assert_eq!(hops, vec![1, 2, 0], "the 5-hop query was dropped");
        let mut q = OutQueue::new(size * 2);
        q.push(query(1));
        q.push(query(2));
        assert_eq!(q.push(query(9)), Pushed::DroppedNew);
    }

    #[test]
    fn qrp_is_never_dropped_and_overflow_is_reported() {
        use crate::codec::message::RouteTableUpdate;
        let reset = || {
            out(
                Message::Qrp(RouteTableUpdate::Reset {
                    table_len: 8,
                    infinity: 7,
                }),
                0,
            )
        };
        let mut q = OutQueue::new(reset().wire.len());
        assert_eq!(q.push(reset()), Pushed::Queued);
        assert_eq!(q.push(query(0)), Pushed::DroppedNew);
        assert_eq!(q.push(reset()), Pushed::Overflow);
    }
}
