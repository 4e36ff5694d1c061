//! Spreading client connections evenly over the proxy workers.
//!
//! # Why
//! Every worker waits on the same listening socket, and the first one woken accepts whatever is
//! queued: a burst of new connections (a browser opening several, a load test opening 64) can
//! all land on one worker while the other cores' workers sit idle. Measured with wrk's 64
//! connections: some runs had every connection on one of two workers, and throughput at 1 KiB
//! varied from 42k to 70k req/s between runs. nginx avoids this with `SO_REUSEPORT` (the kernel
//! hashes connections over per-worker sockets, which evens out only on average).
//!
//! # How
//! Each worker counts the connections it serves. A worker that accepts a connection while
//! another worker serves fewer hands the socket over (before any byte is read, before TLS) to
//! the least loaded one through that worker's inbox; counts are taken at hand-over time, so a
//! burst is dealt out evenly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A connection handed from one worker to another.
pub(crate) type Handoff = (std::net::TcpStream, SocketAddr);

#[derive(Debug)]
struct Shared {
    loads: Box<[AtomicUsize]>,
    inboxes: Box<[UnboundedSender<Handoff>]>,
}

/// One worker's view of the group.
#[derive(Debug)]
pub(crate) struct Balancer {
    shared: Arc<Shared>,
    me: usize,
    inbox: Option<UnboundedReceiver<Handoff>>,
}

/// Counts a connection against its worker until dropped.
#[derive(Debug)]
pub(crate) struct Load {
    shared: Arc<Shared>,
    worker: usize,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.shared.loads[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where an accepted connection goes.
#[derive(Debug)]
pub(crate) enum Placement {
    /// Served by this worker.
    Here(TcpStream, Load),
    /// Handed to another worker.
    Away,
}

impl Balancer {
    /// One balancer per worker, for `count` workers.
    pub(crate) fn group(count: usize) -> Vec<Self> {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..count).map(|_| unbounded_channel()).unzip();
        let shared = Arc::new(Shared {
            loads: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: senders.into_boxed_slice(),
        });
        receivers
            .into_iter()
            .enumerate()
            .map(|(me, inbox)| Self {
                shared: Arc::clone(&shared),
                me,
                inbox: Some(inbox),
            })
            .collect()
    }

    /// This worker's inbox of handed-over connections (taken once by its accept loop).
    pub(crate) fn take_inbox(&mut self) -> Option<UnboundedReceiver<Handoff>> {
        self.inbox.take()
    }

    /// Decide where a connection this worker accepted is served.
    pub(crate) fn place(&self, stream: TcpStream, remote: SocketAddr) -> Placement {
        let loads = &self.shared.loads;
        let (least, least_load) = loads
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, load)| load)
            .unwrap_or((self.me, 0));
        if loads[self.me].load(Ordering::Relaxed) <= least_load {
            return Placement::Here(stream, self.count(self.me));
        }
        let Ok(std_stream) = stream.into_std() else {
            // Cannot leave this runtime (should not happen): the connection is lost either way.
            return Placement::Away;
        };
        // Counted against the receiver now, so the rest of a burst goes elsewhere.
        loads[least].fetch_add(1, Ordering::Relaxed);
        match self.shared.inboxes[least].send((std_stream, remote)) {
            Ok(()) => Placement::Away,
            Err(returned) => {
                // That worker has stopped: serve it here after all.
                loads[least].fetch_sub(1, Ordering::Relaxed);
                let (std_stream, _) = returned.0;
                match TcpStream::from_std(std_stream) {
                    Ok(stream) => Placement::Here(stream, self.count(self.me)),
                    Err(_) => Placement::Away,
                }
            }
        }
    }

    /// Take over a connection another worker handed to this one (already counted here).
    pub(crate) fn receive(&self, handoff: Handoff) -> Option<(TcpStream, SocketAddr, Load)> {
        let load = self.counted(self.me);
        let (std_stream, remote) = handoff;
        TcpStream::from_std(std_stream)
            .ok()
            .map(|stream| (stream, remote, load))
    }

    /// Count one more connection against `worker`.
    fn count(&self, worker: usize) -> Load {
        self.shared.loads[worker].fetch_add(1, Ordering::Relaxed);
        self.counted(worker)
    }

    /// The guard for a connection already counted against `worker`.
    fn counted(&self, worker: usize) -> Load {
        Load {
            shared: Arc::clone(&self.shared),
            worker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_burst_is_dealt_out_evenly_and_counts_follow_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut group = Balancer::group(2);
        let mut inbox = group[1].take_inbox().unwrap();
        let mut kept = Vec::new();
        let mut clients = Vec::new();
        // Worker 0 accepts all eight.
        for _ in 0..8 {
            let client = TcpStream::connect(addr).await.unwrap();
            let (stream, remote) = listener.accept().await.unwrap();
            clients.push(client);
            match group[0].place(stream, remote) {
                Placement::Here(stream, load) => kept.push((stream, load)),
                Placement::Away => {}
            }
        }
        let mut moved = Vec::new();
        while let Ok(handoff) = inbox.try_recv() {
            moved.push(group[1].receive(handoff).unwrap());
        }
        assert_eq!((kept.len(), moved.len()), (4, 4));
        let loads = |g: &Balancer| -> Vec<usize> {
            g.shared
                .loads
                .iter()
                .map(|l| l.load(Ordering::Relaxed))
                .collect()
        };
        assert_eq!(loads(&group[0]), [4, 4]);
        // Closed connections stop counting: the next one stays with the emptier worker.
        kept.clear();
        assert_eq!(loads(&group[0]), [0, 4]);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, remote) = listener.accept().await.unwrap();
        assert!(matches!(group[1].place(stream, remote), Placement::Away));
        assert!(
            inbox.try_recv().is_err(),
            "worker 1 does not get its own connection back"
        );
        assert_eq!(loads(&group[0]), [1, 4]);
        drop(moved);
        drop(group);
    }
}
