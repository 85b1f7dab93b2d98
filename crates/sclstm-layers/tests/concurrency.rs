//! Running the two directions concurrently through a [`Join`] changes no result, and the
//! workspace's cache pool drops caches that a longer batch has superseded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sclstm_cpu::CpuBackend;
use sclstm_layers::{Join, LayerWorkspace, sc_lstm_forward};

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
            let other = s.spawn(|| b());
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
    // One join for the forward, one for the backward.
    assert_eq!(join.calls.load(Ordering::Relaxed), 2);
    let (out_s, grads_s) = forward_backward(&workspace(), &spec, &v);
    assert_eq!(out_c, out_s, "forward output differs");
    assert_eq!(grads_c.len(), grads_s.len());
    for (k, (c, s)) in grads_c.iter().zip(&grads_s).enumerate() {
        assert_eq!(c, s, "gradient {k} differs");
    }
}

#[test]
fn a_single_direction_never_uses_the_join() {
    let spec = Spec {
        steps: 3,
        lens: vec![3, 1],
        input: 2,
        hidden: 2,
        dirs: 1,
        tasks: vec![None],
    };
    let v = spec.inputs(0.2);
    let join = Arc::new(ThreadJoin::default());
    let mut ws = workspace();
    ws.set_join(Some(Arc::clone(&join) as Arc<dyn Join>));
    let (out, _) = forward_backward(&ws, &spec, &v);
    assert_eq!(join.calls.load(Ordering::Relaxed), 0);
    assert_eq!(out, forward_backward(&workspace(), &spec, &v).0);
}

#[test]
fn a_longer_batch_replaces_the_pooled_short_caches() {
    let ws = workspace();
    let short = Spec {
        steps: 2,
        lens: vec![2, 1],
        input: 2,
        hidden: 2,
        dirs: 2,
        tasks: vec![None],
    };
    let long = Spec {
        steps: 5,
        lens: vec![5, 4],
        ..short.clone()
    };
    let (vs, vl) = (short.inputs(0.3), long.inputs(0.4));
    forward_backward(&ws, &short, &vs);
    assert_eq!(ws.pooled(), 2, "both direction caches returned");
    // Neither short cache fits: they are dropped, not kept next to the new long ones.
    forward_backward(&ws, &long, &vl);
    assert_eq!(ws.pooled(), 2, "short caches evicted on the miss");
    // The long caches serve the short batch again, with the same result as a fresh pool.
    let again = forward_backward(&ws, &short, &vs);
    assert_eq!(ws.pooled(), 2);
    assert_eq!(again, forward_backward(&workspace(), &short, &vs));
    // A layer of other sizes keeps its own caches: no eviction across geometries.
    let other = Spec {
        hidden: 3,
        ..short.clone()
    };
    forward_backward(&ws, &other, &other.inputs(0.5));
    assert_eq!(ws.pooled(), 4);
}
