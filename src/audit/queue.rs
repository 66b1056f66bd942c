//! A small bounded multi-producer, single-consumer queue with a timed push and a batched pop.
//!
//! `std::sync::mpsc::SyncSender` has no stable `send_timeout`, and the writer wants to take
//! everything waiting at once, so this is a `Mutex<VecDeque>` with two condition variables.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a push failed; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// The queue stayed full for the whole wait.
    Full(T),
    /// The queue was closed.
    Closed(T),
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// The queue between the request path and the writer thread.
#[derive(Debug)]
pub struct Queue<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

impl<T> Queue<T> {
    /// An empty queue holding at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the deque inconsistent: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `item`, waiting at most `wait` for room (`Duration::ZERO`: not at all). Returns the
    /// queue length after the push.
    pub fn push(&self, item: T, wait: Duration) -> Result<usize, PushError<T>> {
        let deadline = Instant::now() + wait;
        let mut state = self.lock();
        loop {
            if state.closed {
                return Err(PushError::Closed(item));
            }
            if state.items.len() < self.capacity {
                state.items.push_back(item);
                let len = state.items.len();
                drop(state);
                self.not_empty.notify_one();
                return Ok(len);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PushError::Full(item));
            }
            state = self
                .not_full
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Moves every waiting item into `out`, waiting at most `wait` for the first one. Returns
    /// `false` once the queue is closed (everything left has then been moved into `out`).
    pub fn pop_all(&self, out: &mut Vec<T>, wait: Duration) -> bool {
        let mut state = self.lock();
        if state.items.is_empty() && !state.closed {
            state = self
                .not_empty
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let open = !state.closed;
        out.extend(state.items.drain(..));
        drop(state);
        self.not_full.notify_all();
        open
    }

    /// Closes the queue: pushes fail from now on, the consumer drains what is left.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_times_out_and_closed_queue_drains() {
        let q = Queue::new(2);
        assert_eq!(q.push(1, Duration::ZERO), Ok(1));
        assert_eq!(q.push(2, Duration::ZERO), Ok(2));
        assert_eq!(q.push(3, Duration::from_millis(5)), Err(PushError::Full(3)));
        q.close();
        assert_eq!(q.push(4, Duration::ZERO), Err(PushError::Closed(4)));
        let mut out = Vec::new();
        assert!(!q.pop_all(&mut out, Duration::from_millis(1)));
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn a_blocked_push_gets_room_when_the_consumer_pops() {
        let q = std::sync::Arc::new(Queue::new(1));
        q.push(1, Duration::ZERO).unwrap();
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.push(2, Duration::from_secs(10)));
        let mut out = Vec::new();
        while out.len() < 2 {
            q.pop_all(&mut out, Duration::from_millis(50));
        }
        assert_eq!(out, [1, 2]);
        assert!(t.join().unwrap().is_ok());
    }
}
