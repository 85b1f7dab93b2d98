//! Running the two directions concurrently through a [`Join`] changes no result, the
//! workspace's cache pool drops caches that a longer batch has superseded, and a weights
//! version lets calls share the weights on the device until it changes, also when
//! layers of the same sizes take turns.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sclstm_cpu::CpuBackend;
use sclstm_layers::{Join, LayerWorkspace, WeightsId, sc_lstm_forward};

use crate::common::{M, all_some, det};
use crate::lstm_checks::{Spec, workspace};

/// Runs the two closures on two scoped OS threads and counts the calls.
#[derive(Default)]
struct ThreadJoin {
    calls: AtomicUsize,
}

impl Join for ThreadJoin {
    fn join(&self, a: &mut (dyn FnMut() + Send), b: &mut (dyn FnMut() + Send)) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        std::thread::scope(|s| {
            let other = s.spawn(b);
            a();
            other.join().expect("the reverse direction panicked");
        });
    }
}

/// Output and every gradient of one recorded forward + backward.
fn forward_backward(ws: &LayerWorkspace<CpuBackend<f64>>, spec: &Spec, v: &[M]) -> (M, Vec<M>) {
    let (out, node) = sc_lstm_forward(ws, &spec.args(v), true).expect("forward");
    let d_out = det(spec.rows(), spec.width(), 3.3, 1.0);
    let grads = all_some(node.expect("recorded").backward(&d_out).expect("backward"));
    (out, grads)
}

#[test]
fn concurrent_directions_match_sequential_bit_for_bit() {
    let spec = Spec {
        steps: 4,
        lens: vec![4, 2, 3],
        input: 3,
        hidden: 3,
        dirs: 2,
        tasks: vec![None, Some(2)],
    };
    let v = spec.inputs(0.61);
    let join = Arc::new(ThreadJoin::default());
    let mut concurrent = workspace();
    concurrent.set_join(Some(Arc::clone(&join) as Arc<dyn Join>));
    assert!(concurrent.has_join());
    let (out_c, grads_c) = forward_backward(&concurrent, &spec, &v);
    // One join each for the weights (transposed and written to the device), the forward
    // and the backward.
    assert_eq!(join.calls.load(Ordering::Relaxed), 3);
    let (out_s, grads_s) = forward_backward(&workspace(), &spec, &v);
    assert_eq!(out_c, out_s, "forward output differs");
    assert_eq!(grads_c.len(), grads_s.len());
    for (k, (c, s)) in grads_c.iter().zip(&grads_s).enumerate() {
        assert_eq!(c, s, "gradient {k} differs");
    }
}

#[test]
fn one_direction_never_uses_the_join_and_two_do() {
    // One direction: a single unit, run on this thread.
    let one = Spec {
        steps: 4,
        lens: vec![1, 4],
        input: 2,
        hidden: 2,
        dirs: 1,
        tasks: vec![None],
    };
    let join = Arc::new(ThreadJoin::default());
    let mut ws = workspace();
    ws.set_join(Some(Arc::clone(&join) as Arc<dyn Join>));
    let v = one.inputs(0.2);
    let single = forward_backward(&ws, &one, &v);
    assert_eq!(join.calls.load(Ordering::Relaxed), 0);
    assert_eq!(single, forward_backward(&workspace(), &one, &v));
    // Two directions: the forward and the backward each run the two units through the
    // join, with the same result as one after the other.
    let two = Spec { dirs: 2, ..one };
    let v = two.inputs(0.7);
    let concurrent = forward_backward(&ws, &two, &v);
    assert_eq!(join.calls.load(Ordering::Relaxed), 3);
    assert_eq!(concurrent, forward_backward(&workspace(), &two, &v));
}

#[test]
fn caches_come_in_row_buckets_and_the_best_fit_is_reused() {
    let ws = workspace();
    // B + N = 2 + 4 = 6 rows → a bucket of 8; 2 + 10 = 12 → 16.
    let short = Spec {
        steps: 2,
        lens: vec![2, 2],
        input: 2,
        hidden: 2,
        dirs: 2,
        tasks: vec![None],
    };
    let long = Spec {
        steps: 5,
        lens: vec![5, 5],
        ..short.clone()
    };
    let (vs, vl) = (short.inputs(0.3), long.inputs(0.4));
    forward_backward(&ws, &short, &vs);
    assert_eq!(ws.pooled(), 2, "both direction caches returned");
    // The short caches are too small for the long batch: two more are made.
    forward_backward(&ws, &long, &vl);
    assert_eq!(ws.pooled(), 4);
    // The short batch takes the short caches again (best fit), nothing new is made, and
    // the result equals a fresh pool's.
    let again = forward_backward(&ws, &short, &vs);
    assert_eq!(ws.pooled(), 4);
    assert_eq!(again, forward_backward(&workspace(), &short, &vs));
    // A one-step, one-sentence call needs 2 rows: the 8-row caches are at most 4× that,
    // the 16-row ones are not, so two are taken and two remain.
    let tiny = Spec {
        steps: 1,
        lens: vec![1],
        ..short.clone()
    };
    let (_, node) = sc_lstm_forward(&ws, &tiny.args(&tiny.inputs(0.9)), true).unwrap();
    assert_eq!(ws.pooled(), 2);
    drop(node);
    assert_eq!(ws.pooled(), 4);
    // A layer of other sizes gets caches of its own.
    let other = Spec {
        hidden: 3,
        ..short.clone()
    };
    forward_backward(&ws, &other, &other.inputs(0.5));
    assert_eq!(ws.pooled(), 6);
}

/// A two-direction layer with one task gate over two short sentences.
fn two_short_sentences() -> Spec {
    Spec {
        steps: 3,
        lens: vec![3, 2],
        input: 2,
        hidden: 2,
        dirs: 2,
        tasks: vec![None],
    }
}

#[test]
fn a_weights_id_reuses_the_device_weights_until_its_version_changes() {
    let spec = two_short_sentences();
    let forward = |ws: &LayerWorkspace<CpuBackend<f64>>, v: &[M], version: Option<u64>| {
        let mut args = spec.args(v);
        args.weights_id = version.map(|version| WeightsId {
            store: 7,
            version,
            directions: vec![vec![0, 1, 2, 3, 4, 5], vec![6, 7, 8, 9, 10, 11]],
        });
        sc_lstm_forward(ws, &args, false).expect("forward").0
    };
    let ws = workspace();
    let mut v = spec.inputs(0.5);
    let first = forward(&ws, &v, Some(1));
    assert_eq!(
        forward(&ws, &v, Some(1)),
        first,
        "reused device weights are the same"
    );
    // Change the forward direction's W_ih in place (same matrix, same address).
    v[1][[0, 0]] += 0.5;
    let fresh = forward(&workspace(), &v, None);
    assert_ne!(first, fresh, "the change reaches the output");
    // The same version promises the same values: the workspace trusts it.
    assert_eq!(forward(&ws, &v, Some(1)), first);
    // A new version, or none, sees the change.
    assert_eq!(forward(&ws, &v, Some(2)), fresh);
    assert_eq!(forward(&ws, &v, None), fresh);
}

#[test]
fn layers_of_the_same_sizes_keep_their_own_device_weights() {
    // Two layers (other parameter ids, the same sizes) called in turn, as an
    // inference pass calls a model's upper layers batch after batch.
    let spec = two_short_sentences();
    let forward = |ws: &LayerWorkspace<CpuBackend<f64>>, v: &[M], first_id: u32| {
        let mut args = spec.args(v);
        let ids = |d: u32| (first_id + 6 * d..first_id + 6 * d + 6).collect();
        args.weights_id = Some(WeightsId {
            store: 9,
            version: 1,
            directions: vec![ids(0), ids(1)],
        });
        sc_lstm_forward(ws, &args, false).expect("forward").0
    };
    let ws = workspace();
    let (mut lower, upper) = (spec.inputs(0.5), spec.inputs(0.7));
    let first = forward(&ws, &lower, 0);
    let other = forward(&ws, &upper, 100);
    assert_ne!(first, other);
    // Change the lower layer's W_ih in place under the same version: the workspace
    // trusts the version, so an unchanged output shows its weights stayed on the
    // device while the upper layer ran.
    lower[1][[0, 0]] += 0.5;
    for _ in 0..2 {
        assert_eq!(
            forward(&ws, &lower, 0),
            first,
            "the lower layer's weights stayed"
        );
        assert_eq!(forward(&ws, &upper, 100), other);
    }
}
