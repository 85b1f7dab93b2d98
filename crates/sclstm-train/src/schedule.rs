//! Algorithm 1's task schedule: which task each batch of an epoch belongs to.
//!
//! The paper picks a task at random, then an unseen example of that task, until every
//! example of every task has been used once. Choosing the task with probability
//! proportional to the batches it has left is the same as taking a uniformly random
//! interleaving of all tasks' batches, which is what [`epoch_order`] builds, from
//! `(seed, epoch)` alone so that a resumed run replays exactly the same order.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Stream tag mixed into the seed so the schedule's generator is independent of the
/// generators that shuffle sentences and drop units.
const SCHEDULE_STREAM: u64 = 0x5C4E_D01E;

/// The task index of every batch of one epoch, in training order.
///
/// `batches_per_task[k]` is the number of batches task `k` has this epoch; the result
/// holds index `k` exactly that many times.
pub fn epoch_order(batches_per_task: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = batches_per_task
        .iter()
        .enumerate()
        .flat_map(|(k, &n)| std::iter::repeat_n(k, n))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SCHEDULE_STREAM);
    rng.set_stream(epoch as u64);
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::epoch_order;

    #[test]
    fn every_batch_of_every_task_is_visited_once() {
        let counts = [7, 0, 3, 12];
        let order = epoch_order(&counts, 42, 0);
        assert_eq!(order.len(), 22);
        for (k, &n) in counts.iter().enumerate() {
            assert_eq!(order.iter().filter(|&&t| t == k).count(), n, "task {k}");
        }
    }

    #[test]
    fn order_depends_only_on_seed_and_epoch() {
        let counts = [50, 40, 30];
        assert_eq!(epoch_order(&counts, 1, 3), epoch_order(&counts, 1, 3));
        assert_ne!(epoch_order(&counts, 1, 3), epoch_order(&counts, 1, 4));
        assert_ne!(epoch_order(&counts, 1, 3), epoch_order(&counts, 2, 3));
    }

    #[test]
    fn tasks_are_interleaved_not_blocked() {
        // With 100 batches each, a random interleaving switches task far more often than
        // a task-by-task loop (which switches twice).
        let order = epoch_order(&[100, 100, 100], 7, 0);
        let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(switches > 100, "only {switches} task switches");
        // The first third of the epoch holds batches of every task.
        for k in 0..3 {
            assert!(order[..100].contains(&k));
        }
    }
}
