//! Scoring picks against ground truth.
//!
//! - `czii`: the CZII CryoET Object Identification metric exactly as its official code computes
//!   it (a KD-tree ball query of radius `distance_multiplier × r_class` from each ground-truth
//!   point, distance `<=` radius as in scipy's `query_ball_tree`): per tomogram and class TP =
//!   distinct ground-truth points hit by at least one pick, FP = picks − TP (duplicates count
//!   against you), FN = ground truth − TP; empty ground truth gives TP = FN = 0, FP = picks;
//!   TP/FP/FN summed over tomograms; precision = TP/(TP+FP) (0 if no picks), recall =
//!   TP/(TP+FN) (0 if no truth), F-beta = (1+β²)PR/(β²P+R) (0 if P+R = 0); the score is
//!   Σ w_c F_c / Σ w, the classes being those with ground truth in some tomogram.
//! - `matched`: a one-to-one assignment of picks to ground truth within the same radius that
//!   maximises the number of matches (then minimises the summed distance), solved exactly with
//!   the Hungarian algorithm on each connected component of the radius graph.
//! - `shrec`: SHREC 2021 — a pick hits a particle when its rounded voxel lies in the particle's
//!   instance mask dilated by a ball of `dilation` voxels; TP = distinct particles hit by picks
//!   of their class, FP = picks − TP, FN = truth − TP.

use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A point with a class and a score (positions in Å).
#[derive(Debug, Clone, PartialEq)]
pub struct Pt {
    /// Class name.
    pub class: String,
    /// Position (x, y, z) in Å.
    pub p: [f64; 3],
    /// Score (picks) or 1 (truth).
    pub score: f64,
    /// Instance id (truth; 0 = unknown).
    pub instance: u32,
}

/// Picks and ground truth of one tomogram.
#[derive(Debug, Clone, Default)]
pub struct Tomo {
    /// Tomogram name.
    pub name: String,
    /// Picks.
    pub picks: Vec<Pt>,
    /// Ground truth.
    pub truth: Vec<Pt>,
}

/// How picks are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Official CZII rule.
    Czii,
    /// One-to-one optimal assignment.
    Matched,
    /// SHREC 2021 dilated-mask rule.
    Shrec,
}

/// How the class-weighted mean is normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalise {
    /// Σ weights of the evaluated classes (those with ground truth).
    Evaluated,
    /// Σ of every configured weight, as the official code does (`sum(weights.values())`).
    Configured,
}

/// Evaluation settings.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Matching rule.
    pub mode: Mode,
    /// β of the F-beta score.
    pub beta: f64,
    /// β of the F-score whose maximum over the PR curve gives each class's `best_threshold`
    /// (4 tunes for the CZII score; 1 for F1, which weighs precision and recall alike).
    pub tune_beta: f64,
    /// Hit radius = `distance_multiplier × class radius`.
    pub distance_multiplier: f64,
    /// Class radii in Å by name (fall back to the ground-truth table's radii).
    pub radii: BTreeMap<String, f64>,
    /// Class weights by name (missing: 1).
    pub weights: BTreeMap<String, f64>,
    /// Normalisation of the weighted mean.
    pub normalise: Normalise,
}

/// The CZII defaults: (name, radius Å, weight).
pub const CZII_CLASSES: [(&str, f64, f64); 6] = [
    ("apo-ferritin", 60.0, 1.0),
    ("beta-amylase", 65.0, 0.0),
    ("beta-galactosidase", 90.0, 2.0),
    ("ribosome", 150.0, 1.0),
    ("thyroglobulin", 130.0, 2.0),
    ("virus-like-particle", 135.0, 1.0),
];

/// Precision, recall and F-beta from counts, with the official conventions for zeros.
pub fn prf(tp: i64, fp: i64, fn_: i64, beta: f64) -> (f64, f64, f64) {
    let p = if tp + fp > 0 {
        tp as f64 / (tp + fp) as f64
    } else {
        0.0
    };
    let r = if tp + fn_ > 0 {
        tp as f64 / (tp + fn_) as f64
    } else {
        0.0
    };
    let b2 = beta * beta;
    let f = if p + r > 0.0 {
        (1.0 + b2) * p * r / (b2 * p + r)
    } else {
        0.0
    };
    (p, r, f)
}

/// Uniform grid for radius queries.
struct Grid {
    cell: f64,
    map: HashMap<[i64; 3], Vec<usize>>,
}
impl Grid {
    fn new(pts: &[[f64; 3]], cell: f64) -> Grid {
        let cell = if cell > 0.0 { cell } else { 1.0 };
        let mut map: HashMap<[i64; 3], Vec<usize>> = HashMap::new();
        for (i, p) in pts.iter().enumerate() {
            map.entry(Self::key(p, cell)).or_default().push(i);
        }
        Grid { cell, map }
    }
    fn key(p: &[f64; 3], cell: f64) -> [i64; 3] {
        [
            (p[0] / cell).floor() as i64,
            (p[1] / cell).floor() as i64,
            (p[2] / cell).floor() as i64,
        ]
    }
    /// Indices within distance `r` (inclusive: d² <= r²) of `q`, ascending; r <= cell.
    fn within(&self, pts: &[[f64; 3]], q: &[f64; 3], r: f64) -> Vec<usize> {
        let k = Self::key(q, self.cell);
        let mut out = Vec::new();
        for dz in -1..=1 {
            for dy in -1..=1 {
                for dx in -1..=1 {
                    if let Some(v) = self.map.get(&[k[0] + dz, k[1] + dy, k[2] + dx]) {
                        for &i in v {
                            if d2(&pts[i], q) <= r * r {
                                out.push(i);
                            }
                        }
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }
}

fn d2(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// For each candidate, the reference points within `radius` (inclusive).
pub fn ball_hits(reference: &[[f64; 3]], radius: f64, candidates: &[[f64; 3]]) -> Vec<Vec<usize>> {
    let g = Grid::new(reference, radius);
    candidates
        .iter()
        .map(|c| g.within(reference, c, radius))
        .collect()
}

/// The official CZII counts for one tomogram and class: (TP, FP, FN). As in the official
/// code, FP = picks − TP can be negative when one pick lies within reach of several
/// ground-truth particles (TP counts particles, not picks); this is reproduced, not corrected.
pub fn czii_counts(
    reference: &[[f64; 3]],
    radius: f64,
    candidates: &[[f64; 3]],
) -> (i64, i64, i64) {
    if reference.is_empty() {
        return (0, candidates.len() as i64, 0);
    }
    if candidates.is_empty() {
        return (0, 0, reference.len() as i64);
    }
    let hit: HashSet<usize> = ball_hits(reference, radius, candidates)
        .into_iter()
        .flatten()
        .collect();
    let tp = hit.len() as i64;
    (
        tp,
        candidates.len() as i64 - tp,
        reference.len() as i64 - tp,
    )
}

/// Greedy one-to-one matching (closest pair first) — *not* optimal; kept for comparison.
pub fn greedy_matching(reference: &[[f64; 3]], radius: f64, candidates: &[[f64; 3]]) -> usize {
    let hits = ball_hits(reference, radius, candidates);
    let mut pairs: Vec<(f64, usize, usize)> = hits
        .iter()
        .enumerate()
        .flat_map(|(i, h)| h.iter().map(move |&j| (i, j)))
        .map(|(i, j)| (d2(&candidates[i], &reference[j]), i, j))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (mut uc, mut ur) = (HashSet::new(), HashSet::new());
    let mut n = 0;
    for (_, i, j) in pairs {
        if !uc.contains(&i) && !ur.contains(&j) {
            uc.insert(i);
            ur.insert(j);
            n += 1;
        }
    }
    n
}

/// Minimum-cost assignment of every row to a distinct column (`rows <= cols`), Hungarian
/// algorithm with potentials, O(rows² cols). Returns the column of each row.
pub fn hungarian(cost: &[Vec<f64>]) -> Vec<usize> {
    let n = cost.len();
    if n == 0 {
        return Vec::new();
    }
    let m = cost[0].len();
    assert!(n <= m, "hungarian: more rows than columns");
    let inf = f64::INFINITY;
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut col = vec![0usize; n];
    for j in 1..=m {
        if p[j] != 0 {
            col[p[j] - 1] = j - 1;
        }
    }
    col
}

/// Optimal one-to-one matching within `radius`: the pairs (candidate, reference) of a matching
/// with the most pairs and, among those, the least summed distance.
pub fn optimal_matching(
    reference: &[[f64; 3]],
    radius: f64,
    candidates: &[[f64; 3]],
) -> Vec<(usize, usize)> {
    let hits = ball_hits(reference, radius, candidates);
    let nc = candidates.len();
    // connected components of the bipartite radius graph (union-find over nc + nr nodes)
    let mut parent: Vec<usize> = (0..nc + reference.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for (i, h) in hits.iter().enumerate() {
        for &j in h {
            let (a, b) = (find(&mut parent, i), find(&mut parent, nc + j));
            if a != b {
                parent[a] = b;
            }
        }
    }
    let mut comps: BTreeMap<usize, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (i, h) in hits.iter().enumerate() {
        if !h.is_empty() {
            let r = find(&mut parent, i);
            comps.entry(r).or_default().0.push(i);
        }
    }
    for j in 0..reference.len() {
        let r = find(&mut parent, nc + j);
        if let Some(c) = comps.get_mut(&r) {
            c.1.push(j);
        }
    }
    let mut pairs = Vec::new();
    for (_, (cs, rs)) in comps {
        let big = radius * (cs.len().min(rs.len()) as f64 + 1.0) + 1.0;
        let edge = |ci: usize, rj: usize| -> Option<f64> {
            let d = d2(&candidates[ci], &reference[rj]).sqrt();
            hits[ci].binary_search(&rj).ok().map(|_| d - big)
        };
        let transpose = cs.len() > rs.len();
        let (rows, cols) = if transpose { (&rs, &cs) } else { (&cs, &rs) };
        let cost: Vec<Vec<f64>> = rows
            .iter()
            .map(|&a| {
                cols.iter()
                    .map(|&b| {
                        let e = if transpose { edge(b, a) } else { edge(a, b) };
                        e.unwrap_or(0.0)
                    })
                    .collect()
            })
            .collect();
        for (ri, ci) in hungarian(&cost).into_iter().enumerate() {
            let (a, b) = (rows[ri], cols[ci]);
            let (c, r) = if transpose { (b, a) } else { (a, b) };
            if edge(c, r).is_some() {
                pairs.push((c, r));
            }
        }
    }
    pairs.sort_unstable();
    pairs
}

/// An instance map for the `shrec` rule.
#[derive(Debug, Clone)]
pub struct InstanceMap {
    /// Instance ids (z, y, x), 0 = none.
    pub data: Vec<u32>,
    /// Shape (z, y, x).
    pub shape: [usize; 3],
    /// Voxel size (z, y, x) Å.
    pub voxel: [f64; 3],
    /// Centre of voxel 0 (z, y, x) Å.
    pub origin: [f64; 3],
}

impl InstanceMap {
    /// The instance hit by a pick at `p` (x, y, z Å): the id at its rounded voxel, else the
    /// nearest non-zero voxel within `dilation` voxels (ties: smallest id); 0 = none.
    pub fn hit(&self, p: &[f64; 3], dilation: f64) -> u32 {
        let v = [
            ((p[2] - self.origin[0]) / self.voxel[0]).round() as i64,
            ((p[1] - self.origin[1]) / self.voxel[1]).round() as i64,
            ((p[0] - self.origin[2]) / self.voxel[2]).round() as i64,
        ];
        let r = dilation.max(0.0).floor() as i64;
        let mut best: Option<(i64, u32)> = None;
        for dz in -r..=r {
            for dy in -r..=r {
                for dx in -r..=r {
                    let d = dz * dz + dy * dy + dx * dx;
                    if d as f64 > dilation * dilation {
                        continue;
                    }
                    let (z, y, x) = (v[0] + dz, v[1] + dy, v[2] + dx);
                    if z < 0
                        || y < 0
                        || x < 0
                        || z >= self.shape[0] as i64
                        || y >= self.shape[1] as i64
                        || x >= self.shape[2] as i64
                    {
                        continue;
                    }
                    let id = self.data
                        [((z as usize) * self.shape[1] + y as usize) * self.shape[2] + x as usize];
                    if id != 0 && best.is_none_or(|(bd, bi)| (d, id) < (bd, bi)) {
                        best = Some((d, id));
                    }
                }
            }
        }
        best.map_or(0, |b| b.1)
    }
}

/// Per-class counts and scores.
#[derive(Debug, Clone, Serialize)]
pub struct ClassScore {
    /// Class name.
    pub name: String,
    /// Hit radius in Å (`distance_multiplier × radius`).
    pub hit_radius_a: f64,
    /// Weight in the mean.
    pub weight: f64,
    /// Number of picks.
    pub picks: usize,
    /// Number of ground-truth particles.
    pub truth: usize,
    /// True positives.
    pub tp: i64,
    /// False positives.
    pub fp: i64,
    /// False negatives.
    #[serde(rename = "fn")]
    pub fn_: i64,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// F-beta.
    pub fbeta: f64,
    /// Score threshold maximising the F-score with β = `tune_beta` (picks with score `>=` it
    /// are kept), if any pick hits: halfway between the last score kept and the first dropped.
    pub best_threshold: Option<f64>,
    /// That F-score (β = `tune_beta`) at that threshold.
    pub best_score: f64,
}

/// One point of a precision-recall curve: the picks with score `>= threshold`.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    /// Score threshold.
    pub threshold: f64,
    /// True positives.
    pub tp: i64,
    /// False positives.
    pub fp: i64,
    /// False negatives.
    #[serde(rename = "fn")]
    pub fn_: i64,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F-beta.
    pub fbeta: f64,
}

/// The evaluation report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Mode.
    pub mode: Mode,
    /// β.
    pub beta: f64,
    /// β of the F-score that chose `best_threshold`.
    pub tune_beta: f64,
    /// Hit radius multiplier.
    pub distance_multiplier: f64,
    /// Per class, evaluated classes in ground-truth order.
    pub classes: Vec<ClassScore>,
    /// Overall: TP/FP/FN summed over classes, micro precision/recall/F1/F-beta, and `score`,
    /// the class-weighted mean F-beta (the CZII leaderboard number in `czii` mode).
    pub overall: serde_json::Value,
    /// Per tomogram and class: TP, FP, FN.
    pub tomograms: Vec<serde_json::Value>,
    /// Precision-recall curves over the score threshold, per class.
    pub pr_curves: BTreeMap<String, Vec<CurvePoint>>,
    /// Confusion: rows = predicted class, columns = true class or `background`; a pick counts
    /// for the nearest ground-truth particle (any class) within that particle's hit radius.
    pub confusion: serde_json::Value,
    /// Picks of classes the truth never declares (ignored by the scores).
    pub ignored_picks: usize,
}

/// The classes scored: those with ground truth somewhere, in first-seen order; then classes the
/// truth tables declare (`declared`) that have picks but no truth — every such pick is false,
/// which is how a tomogram known to hold none of a class scores the picks of it.
fn evaluated_classes(tomos: &[Tomo], declared: &BTreeMap<String, f64>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let truth = tomos.iter().flat_map(|t| &t.truth);
    let picks = tomos
        .iter()
        .flat_map(|t| &t.picks)
        .filter(|p| declared.contains_key(&p.class));
    for p in truth.chain(picks) {
        if !names.contains(&p.class) {
            names.push(p.class.clone());
        }
    }
    names
}

/// Score picks against truth over several tomograms. `instances` (by tomogram name) and
/// `dilation` are needed in `shrec` mode. `table_radii` are the truth tables' class radii.
pub fn evaluate(
    cfg: &EvalConfig,
    tomos: &[Tomo],
    table_radii: &BTreeMap<String, f64>,
    instances: &BTreeMap<String, InstanceMap>,
    dilation: f64,
) -> Result<Report> {
    let names = evaluated_classes(tomos, table_radii);
    let radius = |n: &str| -> Result<f64> {
        cfg.radii
            .get(n)
            .or_else(|| table_radii.get(n))
            .copied()
            .ok_or_else(|| {
                anyhow::anyhow!("evaluate: no radius for class {n:?}: give it in `radii`")
            })
    };
    let mut hit_r = BTreeMap::new();
    for n in &names {
        hit_r.insert(n.clone(), cfg.distance_multiplier * radius(n)?);
    }
    if cfg.mode == Mode::Shrec {
        for t in tomos {
            if !instances.contains_key(&t.name) {
                bail!(
                    "evaluate: shrec mode needs the instance map of tomogram {:?}",
                    t.name
                );
            }
        }
    }
    let mut totals: BTreeMap<String, [i64; 5]> =
        names.iter().map(|n| (n.clone(), [0; 5])).collect();
    let mut per_tomo = Vec::new();
    // events for the PR curves: (score, tomogram, [hit truth indices])
    let mut events: BTreeMap<String, Vec<(f64, usize, Vec<usize>)>> = BTreeMap::new();
    let mut truth_count: BTreeMap<String, usize> = BTreeMap::new();
    let mut ignored = 0;
    for (ti, t) in tomos.iter().enumerate() {
        let mut rows = Vec::new();
        for n in &names {
            let r = hit_r[n];
            let tr: Vec<usize> = (0..t.truth.len())
                .filter(|&i| &t.truth[i].class == n)
                .collect();
            let pk: Vec<usize> = (0..t.picks.len())
                .filter(|&i| &t.picks[i].class == n)
                .collect();
            let refs: Vec<[f64; 3]> = tr.iter().map(|&i| t.truth[i].p).collect();
            let cands: Vec<[f64; 3]> = pk.iter().map(|&i| t.picks[i].p).collect();
            let hits: Vec<Vec<usize>> = match cfg.mode {
                Mode::Czii | Mode::Matched => ball_hits(&refs, r, &cands),
                Mode::Shrec => {
                    let im = &instances[&t.name];
                    let by_inst: HashMap<u32, usize> = tr
                        .iter()
                        .enumerate()
                        .map(|(k, &i)| (t.truth[i].instance, k))
                        .collect();
                    cands
                        .iter()
                        .map(|c| {
                            let id = im.hit(c, dilation);
                            by_inst.get(&id).map(|&k| vec![k]).unwrap_or_default()
                        })
                        .collect()
                }
            };
            let (tp, fp, fn_) = match cfg.mode {
                Mode::Czii => czii_counts(&refs, r, &cands),
                Mode::Matched => {
                    let m = optimal_matching(&refs, r, &cands).len() as i64;
                    (m, cands.len() as i64 - m, refs.len() as i64 - m)
                }
                Mode::Shrec => {
                    let hit = hits
                        .iter()
                        .flatten()
                        .copied()
                        .collect::<HashSet<usize>>()
                        .len() as i64;
                    (hit, cands.len() as i64 - hit, refs.len() as i64 - hit)
                }
            };
            let e = totals.get_mut(n).expect("class");
            e[0] += tp;
            e[1] += fp;
            e[2] += fn_;
            e[3] += cands.len() as i64;
            e[4] += refs.len() as i64;
            *truth_count.entry(n.clone()).or_default() += refs.len();
            let ev = events.entry(n.clone()).or_default();
            for (k, &i) in pk.iter().enumerate() {
                ev.push((t.picks[i].score, ti, hits[k].clone()));
            }
            rows.push(serde_json::json!({"class": n, "tp": tp, "fp": fp, "fn": fn_}));
        }
        ignored += t.picks.iter().filter(|p| !names.contains(&p.class)).count();
        per_tomo.push(serde_json::json!({"name": t.name, "classes": rows}));
    }
    let mut classes = Vec::new();
    let mut pr_curves = BTreeMap::new();
    let (mut wsum, mut fsum) = (0.0, 0.0);
    let (mut ttp, mut tfp, mut tfn) = (0, 0, 0);
    for n in &names {
        let [tp, fp, fn_, npk, ntr] = totals[n];
        let (p, r, fb) = prf(tp, fp, fn_, cfg.beta);
        let (_, _, f1) = prf(tp, fp, fn_, 1.0);
        let w = cfg.weights.get(n).copied().unwrap_or(1.0);
        wsum += w;
        fsum += w * fb;
        ttp += tp;
        tfp += fp;
        tfn += fn_;
        let curve = pr_curve(
            events.remove(n).unwrap_or_default(),
            truth_count[n],
            cfg.beta,
        );
        // No threshold is best where no pick hits: the F-score is 0 at every one of them. Ties
        // go to the highest threshold (the curve runs down the scores). The threshold returned
        // lies halfway between the last score kept and the first one dropped (0 when every pick
        // is kept), not on a validation score, where the slightest shift of a test score would
        // flip the decision.
        let tuned = |c: &CurvePoint| prf(c.tp, c.fp, c.fn_, cfg.tune_beta).2;
        let best = (0..curve.len())
            .map(|i| (i, tuned(&curve[i])))
            .filter(|(_, f)| *f > 0.0)
            .fold(None::<(usize, f64)>, |b, c| match b {
                Some(b) if b.1 >= c.1 => Some(b),
                _ => Some(c),
            });
        let best = best.map(|(i, f)| {
            let kept = curve[i].threshold;
            let dropped = curve
                .get(i + 1)
                .map_or(if kept > 0.0 { 0.0 } else { kept }, |c| c.threshold);
            (kept, 0.5 * (kept + dropped), f)
        });
        classes.push(ClassScore {
            name: n.clone(),
            hit_radius_a: hit_r[n],
            weight: w,
            picks: npk as usize,
            truth: ntr as usize,
            tp,
            fp,
            fn_,
            precision: p,
            recall: r,
            f1,
            fbeta: fb,
            best_threshold: best.map(|b| b.1),
            best_score: best.map_or(0.0, |b| b.2),
        });
        pr_curves.insert(n.clone(), thin(curve, 256, best.map(|b| b.0)));
    }
    if cfg.normalise == Normalise::Configured && !cfg.weights.is_empty() {
        wsum = cfg.weights.values().sum();
    }
    let score = if wsum > 0.0 { fsum / wsum } else { 0.0 };
    let (p, r, fb) = prf(ttp, tfp, tfn, cfg.beta);
    let (_, _, f1) = prf(ttp, tfp, tfn, 1.0);
    let overall = serde_json::json!({
        "tp": ttp, "fp": tfp, "fn": tfn, "precision": p, "recall": r, "f1": f1, "fbeta": fb,
        "score": score, "weight_sum": wsum,
    });
    let confusion = confusion(tomos, &names, &hit_r, cfg, instances, dilation);
    Ok(Report {
        mode: cfg.mode,
        beta: cfg.beta,
        tune_beta: cfg.tune_beta,
        distance_multiplier: cfg.distance_multiplier,
        classes,
        overall,
        tomograms: per_tomo,
        pr_curves,
        confusion,
        ignored_picks: ignored,
    })
}

/// The PR curve of one class: events (score, tomogram, hit truth indices) over all tomograms;
/// walking down the scores, a truth particle becomes a TP at its first hit (the `czii` /
/// `shrec` counting; in `matched` mode the curve uses the same ball-query counting).
fn pr_curve(mut ev: Vec<(f64, usize, Vec<usize>)>, truth: usize, beta: f64) -> Vec<CurvePoint> {
    ev.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut hit: HashSet<(usize, usize)> = HashSet::new();
    let mut out = Vec::new();
    let truth = truth as i64;
    let (mut tp, mut n) = (0i64, 0i64);
    let mut i = 0;
    while i < ev.len() {
        let s = ev[i].0;
        while i < ev.len() && ev[i].0 == s {
            n += 1;
            for &j in &ev[i].2 {
                if hit.insert((ev[i].1, j)) {
                    tp += 1;
                }
            }
            i += 1;
        }
        let (fp, fn_) = (n - tp, truth - tp);
        let (p, r, f) = prf(tp, fp, fn_, beta);
        out.push(CurvePoint {
            threshold: s,
            tp,
            fp,
            fn_,
            precision: p,
            recall: r,
            fbeta: f,
        });
    }
    out
}

/// At most `n` points, evenly spaced, keeping the first, the last and the point at threshold
/// `best` (the tuned one, which the PR plot marks).
fn thin(c: Vec<CurvePoint>, n: usize, best: Option<f64>) -> Vec<CurvePoint> {
    if c.len() <= n {
        return c;
    }
    let mut keep: Vec<usize> = (0..n).map(|k| k * (c.len() - 1) / (n - 1)).collect();
    keep.extend(c.iter().position(|p| Some(p.threshold) == best));
    keep.sort_unstable();
    keep.dedup();
    keep.into_iter().map(|i| c[i].clone()).collect()
}

fn confusion(
    tomos: &[Tomo],
    names: &[String],
    hit_r: &BTreeMap<String, f64>,
    cfg: &EvalConfig,
    instances: &BTreeMap<String, InstanceMap>,
    dilation: f64,
) -> serde_json::Value {
    let mut rows: Vec<String> = names.to_vec();
    for t in tomos {
        for p in &t.picks {
            if !rows.contains(&p.class) {
                rows.push(p.class.clone());
            }
        }
    }
    let mut cols: Vec<String> = names.to_vec();
    cols.push("background".into());
    let mut m = vec![vec![0usize; cols.len()]; rows.len()];
    let rmax = hit_r.values().cloned().fold(0.0, f64::max);
    for t in tomos {
        let refs: Vec<[f64; 3]> = t.truth.iter().map(|p| p.p).collect();
        let g = Grid::new(&refs, rmax);
        let by_inst: HashMap<u32, usize> = t
            .truth
            .iter()
            .enumerate()
            .map(|(i, p)| (p.instance, i))
            .collect();
        for p in &t.picks {
            let row = rows.iter().position(|r| r == &p.class).expect("row");
            let hit = if cfg.mode == Mode::Shrec {
                instances
                    .get(&t.name)
                    .and_then(|im| by_inst.get(&im.hit(&p.p, dilation)).copied())
            } else {
                g.within(&refs, &p.p, rmax)
                    .into_iter()
                    .filter(|&j| {
                        hit_r
                            .get(&t.truth[j].class)
                            .is_some_and(|r| d2(&refs[j], &p.p) <= r * r)
                    })
                    .min_by(|&a, &b| {
                        let ra = d2(&refs[a], &p.p).sqrt() / hit_r[&t.truth[a].class];
                        let rb = d2(&refs[b], &p.p).sqrt() / hit_r[&t.truth[b].class];
                        ra.total_cmp(&rb).then(a.cmp(&b))
                    })
            };
            let col = hit
                .and_then(|j| cols.iter().position(|c| c == &t.truth[j].class))
                .unwrap_or(cols.len() - 1);
            m[row][col] += 1;
        }
    }
    serde_json::json!({"rows": rows, "columns": cols, "counts": m})
}

#[cfg(test)]
mod tests;
