//! A seeded Isolation Forest with scikit-learn's scoring conventions.
//!
//! Written here because linfa has none and the existing crates (`extended-isolation-forest`, `isolation_forest`)
//! cannot be seeded, and reproducibility is the point: the same warehouse, model version and data must give the
//! same threshold on every replica. The algorithm follows scikit-learn's `IsolationForest` (which builds
//! `ExtraTreeRegressor`s with `max_features=1`, random splitter): each tree sees `max_samples` rows drawn without
//! replacement, grows to depth `ceil(log2(max_samples))`, splits on a random non-constant feature at a uniform
//! threshold in `[min, max)`, and a leaf's path length is `depth + c(n_leaf)`.

use crate::error::{DetectError, check_finite};
use linfa::dataset::DatasetBase;
use linfa::traits::{Fit, PredictInplace};
use ndarray::{Array1, ArrayBase, ArrayView2, Data, Ix2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// scikit-learn's `FEATURE_THRESHOLD`: a feature whose range in a node is at most this is treated as constant.
const FEATURE_THRESHOLD: f64 = 1e-7;
/// Below this many (sample x tree) visits, rayon's fork/join costs more than it saves.
const PAR_MIN_WORK: usize = 16_384;

/// How the decision offset is chosen, as scikit-learn's `contamination`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Contamination {
    /// `offset_ = -0.5`, so `decision_function < 0` means "more isolated than average".
    Auto,
    /// `offset_` = this quantile of the training `score_samples`.
    Fraction(f64),
}

/// Hyper-parameters; the defaults are scikit-learn's `IsolationForest()`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolationForestParams {
    pub n_estimators: usize,
    /// Upper bound on rows per tree; the effective value is `min(max_samples, n)` as sklearn's `"auto"`.
    pub max_samples: usize,
    pub contamination: Contamination,
    pub seed: u64,
}

impl Default for IsolationForestParams {
    fn default() -> Self {
        Self {
            n_estimators: 100,
            max_samples: 256,
            contamination: Contamination::Auto,
            seed: 0,
        }
    }
}

impl IsolationForestParams {
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn validate(&self) -> Result<(), DetectError> {
        if self.n_estimators == 0 {
            return Err(DetectError::InvalidParameter(
                "n_estimators must be >= 1".into(),
            ));
        }
        if self.max_samples == 0 {
            return Err(DetectError::InvalidParameter(
                "max_samples must be >= 1".into(),
            ));
        }
        if let Contamination::Fraction(c) = self.contamination
            && !(c > 0.0 && c <= 0.5)
        {
            return Err(DetectError::InvalidParameter(format!(
                "contamination must be in (0, 0.5], got {c}"
            )));
        }
        Ok(())
    }
}

/// One node of a flattened tree. `feature == u32::MAX` marks a leaf whose `value` is its path length.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Node {
    feature: u32,
    left: u32,
    right: u32,
    /// Split threshold (`x <= threshold` goes left) or, for a leaf, `depth + c(n_leaf)`.
    value: f64,
}

/// A one-feature tree as the step function it is: leaf `k` covers `(bounds[k-1], bounds[k]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Steps {
    bounds: Vec<f64>,
    values: Vec<f64>,
}

/// A tree: nodes in general, or (one feature, the baseline's case) only its step function, which scores a
/// sorted batch in one merge pass and serializes at half the size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Tree {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    nodes: Vec<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    steps: Option<Steps>,
}

impl Tree {
    #[inline]
    fn path_length(&self, row: &[f64]) -> f64 {
        if let Some(st) = &self.steps {
            return st.values[st.bounds.partition_point(|b| *b < row[0])];
        }
        let mut i = 0usize;
        loop {
            let node = &self.nodes[i];
            if node.feature == u32::MAX {
                return node.value;
            }
            i = if row[node.feature as usize] <= node.value {
                node.left
            } else {
                node.right
            } as usize;
        }
    }
}

/// A fitted forest. Serializable so the registry can store it next to its threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    pub params: IsolationForestParams,
    /// Effective rows per tree (`min(max_samples, n)`).
    pub max_samples: usize,
    pub n_features: usize,
    /// scikit-learn's `offset_`: `decision_function = score_samples - offset`.
    pub offset: f64,
    trees: Vec<Tree>,
}

/// Average path length of an unsuccessful BST search in `n` points: sklearn's `_average_path_length`.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

impl IsolationForest {
    /// Fits on the rows of `x`; the seed in `params` makes the result bit-for-bit reproducible on any thread
    /// count (each tree gets its own stream derived from it, and trees are combined in a fixed order).
    pub fn fit(x: ArrayView2<f64>, params: &IsolationForestParams) -> Result<Self, DetectError> {
        params.validate()?;
        let (n, d) = x.dim();
        if n == 0 || d == 0 {
            return Err(DetectError::Empty("isolation forest training data"));
        }
        let x = x.as_standard_layout();
        let flat = x
            .as_slice()
            .ok_or_else(|| DetectError::InvalidParameter("non-contiguous data".into()))?;
        check_finite("isolation forest training data", flat)?;
        let max_samples = params.max_samples.min(n);
        let max_depth = (max_samples.max(2) as f64).log2().ceil() as usize;
        let mut master = ChaCha8Rng::seed_from_u64(params.seed);
        let seeds: Vec<u64> = (0..params.n_estimators).map(|_| master.random()).collect();
        let build = |seed: &u64| build_tree(flat, n, d, max_samples, max_depth, *seed);
        let trees: Vec<Tree> = if params.n_estimators * max_samples >= PAR_MIN_WORK {
            seeds.par_iter().with_min_len(8).map(build).collect()
        } else {
            seeds.iter().map(build).collect()
        };
        let mut forest = IsolationForest {
            params: params.clone(),
            max_samples,
            n_features: d,
            offset: -0.5,
            trees,
        };
        if let Contamination::Fraction(c) = params.contamination {
            let scores = forest.score_samples(x.view())?;
            forest.offset = percentile_linear(scores.as_slice().unwrap_or(&[]), 100.0 * c);
        }
        Ok(forest)
    }

    /// scikit-learn's `score_samples`: `-2^(-E[h(x)] / c(max_samples))`, in `[-1, 0)`; lower is more abnormal.
    pub fn score_samples(&self, x: ArrayView2<f64>) -> Result<Array1<f64>, DetectError> {
        let (n, d) = x.dim();
        if d != self.n_features {
            return Err(DetectError::InvalidParameter(format!(
                "isolation forest fitted on {} features, got {d}",
                self.n_features
            )));
        }
        let x = x.as_standard_layout();
        let flat = x
            .as_slice()
            .ok_or_else(|| DetectError::InvalidParameter("non-contiguous data".into()))?;
        check_finite("isolation forest input", flat)?;
        let denom = self.trees.len() as f64 * average_path_length(self.max_samples);
        if d == 1 && self.trees.iter().all(|t| t.steps.is_some()) {
            return Ok(Array1::from(self.score_1d(flat, denom)));
        }
        let score_row = |row: &[f64]| -> f64 {
            let depth: f64 = self.trees.iter().map(|t| t.path_length(row)).sum();
            // sklearn sets the score to 2^-1 when the denominator is 0 (a single training sample).
            let ratio = if denom != 0.0 { depth / denom } else { 1.0 };
            -(2f64.powf(-ratio))
        };
        let out: Vec<f64> = if n * self.trees.len() >= PAR_MIN_WORK {
            flat.par_chunks(d.max(1))
                .with_min_len(128)
                .map(score_row)
                .collect()
        } else {
            flat.chunks(d.max(1)).map(score_row).collect()
        };
        Ok(Array1::from(out))
    }

    /// scikit-learn's `decision_function`: `score_samples - offset`; negative means outlier.
    pub fn decision_function(&self, x: ArrayView2<f64>) -> Result<Array1<f64>, DetectError> {
        Ok(self.score_samples(x)? - self.offset)
    }

    /// scikit-learn's `predict` as booleans: `true` when `decision_function < 0` (an outlier).
    pub fn predict_outliers(&self, x: ArrayView2<f64>) -> Result<Vec<bool>, DetectError> {
        Ok(self
            .decision_function(x)?
            .iter()
            .map(|v| *v < 0.0)
            .collect())
    }

    /// One feature: sort the batch once, then each tree is a merge of its sorted leaf bounds with the sorted
    /// values (O(n + leaves) per tree instead of O(n depth)). Trees are summed in the same order as the general
    /// path, so both give bit-identical scores.
    fn score_1d(&self, x: &[f64], denom: f64) -> Vec<f64> {
        let n = x.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|a, b| x[*a].total_cmp(&x[*b]));
        let sorted: Vec<f64> = order.iter().map(|i| x[*i]).collect();
        let sum_trees = |trees: &[Tree]| -> Vec<f64> {
            let mut depth = vec![0.0f64; n];
            for t in trees {
                let Some(st) = &t.steps else { continue };
                if n * 8 < st.bounds.len() {
                    for (dp, v) in depth.iter_mut().zip(&sorted) {
                        *dp += st.values[st.bounds.partition_point(|b| b < v)];
                    }
                } else {
                    let mut k = 0usize;
                    for (dp, v) in depth.iter_mut().zip(&sorted) {
                        while k < st.bounds.len() && st.bounds[k] < *v {
                            k += 1;
                        }
                        *dp += st.values[k];
                    }
                }
            }
            depth
        };
        // Split the trees in fixed blocks and add the blocks' sums in order: deterministic for any thread count,
        // though (unlike the one-block case) not bit-identical to a single left-to-right sum.
        let depth = if n * self.trees.len() >= 4 * PAR_MIN_WORK {
            let blocks: Vec<Vec<f64>> = self.trees.par_chunks(25).map(sum_trees).collect();
            let mut total = vec![0.0f64; n];
            for b in blocks {
                for (t, v) in total.iter_mut().zip(b) {
                    *t += v;
                }
            }
            total
        } else {
            sum_trees(&self.trees)
        };
        let mut out = vec![0.0f64; n];
        for (pos, &i) in order.iter().enumerate() {
            let ratio = if denom != 0.0 {
                depth[pos] / denom
            } else {
                1.0
            };
            out[i] = -(2f64.powf(-ratio));
        }
        out
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }
}

fn build_tree(
    x: &[f64],
    n: usize,
    d: usize,
    max_samples: usize,
    max_depth: usize,
    seed: u64,
) -> Tree {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let idx: Vec<usize> = rand::seq::index::sample(&mut rng, n, max_samples).into_vec();
    if d == 1 {
        return build_tree_1d(x, idx, max_depth, rng);
    }
    build_tree_nd(x, d, idx, max_depth, rng)
}

/// One feature: with the subsample sorted, every node is a contiguous range, its min and max are its ends and
/// its split point a binary search. Same random draws in the same order as [`build_tree_nd`], hence the same
/// tree, built in O(leaves log n) instead of O(n depth).
fn build_tree_1d(x: &[f64], idx: Vec<usize>, max_depth: usize, mut rng: ChaCha8Rng) -> Tree {
    let mut v: Vec<f64> = idx.iter().map(|i| x[*i]).collect();
    v.sort_by(f64::total_cmp);
    let mut bounds = Vec::new();
    let mut values = Vec::new();
    // Depth-first, left child first: leaves come out in ascending order of their value intervals, each of which
    // is (lower, upper] with `upper` inherited from the split above; the uppers of all leaves but the last are
    // the step bounds.
    let mut stack = vec![(0usize, v.len(), 0usize, f64::INFINITY)];
    while let Some((lo, hi, depth, upper)) = stack.pop() {
        let count = hi - lo;
        let mut split = None;
        if depth < max_depth && count > 1 {
            // Mirrors the feature draw of the general path so both consume the random stream identically.
            let _ = rng.random_range(0..1usize);
            let (mn, mx) = (v[lo], v[hi - 1]);
            if mx > mn + FEATURE_THRESHOLD {
                let mut t = mn + (mx - mn) * rng.random::<f64>();
                if t >= mx {
                    t = mn;
                }
                split = Some(t);
            }
        }
        match split {
            Some(t) => {
                let mid = lo + v[lo..hi].partition_point(|a| *a <= t);
                stack.push((mid, hi, depth + 1, upper));
                stack.push((lo, mid, depth + 1, t));
            }
            None => {
                values.push(depth as f64 + average_path_length(count));
                bounds.push(upper);
            }
        }
    }
    bounds.pop();
    Tree {
        nodes: Vec::new(),
        steps: Some(Steps { bounds, values }),
    }
}

fn build_tree_nd(
    x: &[f64],
    d: usize,
    mut idx: Vec<usize>,
    max_depth: usize,
    mut rng: ChaCha8Rng,
) -> Tree {
    let mut nodes = Vec::with_capacity(2 * idx.len());
    let mut features: Vec<usize> = (0..d).collect();
    // Explicit stack (node slot, range, depth) instead of recursion: depth is small, but no recursion means no
    // stack-size surprises on rayon worker threads.
    nodes.push(Node::leaf(0.0));
    let mut stack = vec![(0usize, 0usize, idx.len(), 0usize)];
    while let Some((slot, lo, hi, depth)) = stack.pop() {
        let count = hi - lo;
        let leaf = Node::leaf(depth as f64 + average_path_length(count));
        if depth >= max_depth || count <= 1 {
            nodes[slot] = leaf;
            continue;
        }
        let Some((f, t)) = draw_split(x, d, &idx[lo..hi], &mut features, &mut rng) else {
            nodes[slot] = leaf;
            continue;
        };
        let mid = partition_rows(x, d, &mut idx, lo..hi, f, t);
        let left = nodes.len();
        nodes.push(leaf);
        nodes.push(leaf);
        nodes[slot] = Node {
            feature: f as u32,
            left: left as u32,
            right: (left + 1) as u32,
            value: t,
        };
        stack.push((left + 1, mid, hi, depth + 1));
        stack.push((left, lo, mid, depth + 1));
    }
    Tree { nodes, steps: None }
}

impl Node {
    /// A leaf whose path length is `value`.
    fn leaf(value: f64) -> Self {
        Node {
            feature: u32::MAX,
            left: 0,
            right: 0,
            value,
        }
    }
}

/// The split (feature, threshold) of the node holding `rows`: features drawn without replacement until a
/// non-constant one turns up, as sklearn's splitter does; `None` when all are constant.
fn draw_split(
    x: &[f64],
    d: usize,
    rows: &[usize],
    features: &mut [usize],
    rng: &mut ChaCha8Rng,
) -> Option<(usize, f64)> {
    let mut remaining = d;
    while remaining > 0 {
        let j = rng.random_range(0..remaining);
        let f = features[j];
        features.swap(j, remaining - 1);
        remaining -= 1;
        let (mut mn, mut mx) = (f64::INFINITY, f64::NEG_INFINITY);
        for &r in rows {
            let v = x[r * d + f];
            mn = mn.min(v);
            mx = mx.max(v);
        }
        if mx <= mn + FEATURE_THRESHOLD {
            continue;
        }
        let mut t = mn + (mx - mn) * rng.random::<f64>();
        if t >= mx {
            t = mn;
        }
        return Some((f, t));
    }
    None
}

/// Partitions `idx[range]` so that rows with `x[.., f] <= t` come first; returns where the rest start.
fn partition_rows(
    x: &[f64],
    d: usize,
    idx: &mut [usize],
    range: std::ops::Range<usize>,
    f: usize,
    t: f64,
) -> usize {
    let mut mid = range.start;
    for k in range {
        if x[idx[k] * d + f] <= t {
            idx.swap(k, mid);
            mid += 1;
        }
    }
    mid
}

/// `numpy.percentile(values, q)` with its default linear interpolation.
pub fn percentile_linear(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = (q / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// linfa composition: `params.fit(&Dataset::from(records))` returns a fitted forest; targets are ignored
/// (unsupervised), as in scikit-learn.
impl<D: Data<Elem = f64>, T> Fit<ArrayBase<D, Ix2>, T, DetectError> for IsolationForestParams {
    type Object = IsolationForest;

    fn fit(
        &self,
        dataset: &DatasetBase<ArrayBase<D, Ix2>, T>,
    ) -> Result<Self::Object, DetectError> {
        IsolationForest::fit(dataset.records.view(), self)
    }
}

/// linfa prediction yields `decision_function` (negative = outlier). Non-finite rows get NaN: linfa's
/// `Predict` cannot return an error, so call [`IsolationForest::decision_function`] to have them refused.
impl<D: Data<Elem = f64>> PredictInplace<ArrayBase<D, Ix2>, Array1<f64>> for IsolationForest {
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<f64>) {
        match self.decision_function(x.view()) {
            Ok(scores) if scores.len() == y.len() => y.assign(&scores),
            _ => y.fill(f64::NAN),
        }
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<f64> {
        Array1::zeros(x.nrows())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-feature fast path must build the very tree the general path builds.
    #[test]
    fn one_feature_fast_path_equals_general_path() {
        let x: Vec<f64> = (0..700)
            .map(|i| (((i * 7919) % 613) as f64 / 7.0).sin() * 10.0 + (i % 5) as f64)
            .collect();
        for seed in 0..20u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let idx: Vec<usize> = rand::seq::index::sample(&mut rng, x.len(), 256).into_vec();
            let fast = build_tree_1d(&x, idx.clone(), 8, rng.clone());
            let general = build_tree_nd(&x, 1, idx, 8, rng);
            for probe in x.iter().copied().chain([-1e9, 1e9, 0.0]) {
                assert_eq!(
                    fast.path_length(&[probe]),
                    general.path_length(&[probe]),
                    "seed {seed} x {probe}"
                );
            }
        }
    }
}
