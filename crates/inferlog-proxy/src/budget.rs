//! Memory shared by the exchanges in flight, as a byte budget.
//!
//! Two budgets use it. Request bodies: each is read into memory whole (up to
//! `max_request_bytes`), so without a shared bound many large bodies at once could take many
//! times that; past `max_request_bytes_in_flight` a request is refused (503) instead. Oversize
//! bodies: with `oversize = "offload"` a record keeps whole bodies (up to `offload_max_bytes`)
//! until it is submitted, after which the capture queue's byte bound applies; each keeps more
//! than `max_payload_bytes` only while that budget lasts, and is cut as with `truncate` when it
//! does not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct MemoryBudget {
    capacity: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(MemoryBudget { capacity, used: AtomicUsize::new(0) })
    }

    /// `bytes` of the budget, held until the returned reservation is dropped; `None` when
    /// they are not available.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut reservation = Reservation { budget: self.clone(), bytes: 0 };
        reservation.grow(bytes).then_some(reservation)
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.capacity)
            })
            .is_ok()
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Takes `more` bytes of the budget too; false (and nothing taken) when they are not there.
    pub fn grow(&mut self, more: usize) -> bool {
        let taken = self.budget.take(more);
        if taken {
            self.bytes += more;
        }
        taken
    }

    /// Gives back everything taken so far; the reservation can grow again.
    pub fn release(&mut self) {
        self.budget.used.fetch_sub(std::mem::take(&mut self.bytes), Ordering::AcqRel);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.reserve(60).unwrap();
        assert!(budget.reserve(50).is_none(), "only 40 left");
        assert!(!a.grow(41) && a.grow(40));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 0);
        assert!(budget.reserve(100).is_some());
    }
}
