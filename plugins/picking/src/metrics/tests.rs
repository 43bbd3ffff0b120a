use super::*;

fn pt(class: &str, x: f64, y: f64, z: f64, score: f64) -> Pt {
    Pt {
        class: class.into(),
        p: [x, y, z],
        score,
        instance: 0,
    }
}

fn cfg(mode: Mode) -> EvalConfig {
    EvalConfig {
        mode,
        beta: 4.0,
        tune_beta: 4.0,
        distance_multiplier: 0.5,
        radii: CZII_CLASSES
            .iter()
            .map(|(n, r, _)| (n.to_string(), *r))
            .collect(),
        weights: CZII_CLASSES
            .iter()
            .map(|(n, _, w)| (n.to_string(), *w))
            .collect(),
        normalise: Normalise::Evaluated,
    }
}

fn run(c: &EvalConfig, tomos: &[Tomo]) -> Report {
    evaluate(c, tomos, &BTreeMap::new(), &BTreeMap::new(), 0.0).unwrap()
}

#[test]
fn czii_ball_query_is_inclusive_at_exactly_half_the_radius() {
    // apo-ferritin r = 60 Å -> hit radius 30 Å
    let gt = [[100.0, 100.0, 100.0]];
    assert_eq!(czii_counts(&gt, 30.0, &[[130.0, 100.0, 100.0]]), (1, 0, 0));
    assert_eq!(czii_counts(&gt, 30.0, &[[100.0, 118.0, 124.0]]), (1, 0, 0)); // 18-24-30 triangle
    assert_eq!(
        czii_counts(&gt, 30.0, &[[130.000_001, 100.0, 100.0]]),
        (0, 1, 1)
    );
    assert_eq!(
        czii_counts(&gt, 30.0, &[[69.9999, 100.0, 100.0]]),
        (0, 1, 1)
    );
}

#[test]
fn czii_duplicates_empty_sides_and_sums() {
    let gt = [[0.0, 0.0, 0.0], [500.0, 0.0, 0.0]];
    // three picks on the first particle: TP 1, FP 2 (duplicates penalised), FN 1
    let dup = [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 2.0, 0.0]];
    assert_eq!(czii_counts(&gt, 30.0, &dup), (1, 2, 1));
    assert_eq!(czii_counts(&gt, 30.0, &[]), (0, 0, 2));
    assert_eq!(czii_counts(&[], 30.0, &dup), (0, 3, 0));
    // one pick within reach of two particles counts both: TP 2, FP = 1 - 2 = -1, as the
    // official code computes it
    let close = [[0.0, 0.0, 0.0], [40.0, 0.0, 0.0]];
    assert_eq!(czii_counts(&close, 30.0, &[[20.0, 0.0, 0.0]]), (2, -1, 0));
}

#[test]
fn czii_report_matches_hand_computation() {
    // tomogram A: ribosome 2 truth, 3 picks (1 dup, 1 miss) ; thyroglobulin 1 truth, 0 picks
    // tomogram B: ribosome 1 truth, 1 hit; thyroglobulin 1 truth, 1 hit + 1 far
    let a = Tomo {
        name: "A".into(),
        truth: vec![
            pt("ribosome", 0.0, 0.0, 0.0, 1.0),
            pt("ribosome", 1000.0, 0.0, 0.0, 1.0),
            pt("thyroglobulin", 0.0, 1000.0, 0.0, 1.0),
        ],
        picks: vec![
            pt("ribosome", 10.0, 0.0, 0.0, 0.9),
            pt("ribosome", 0.0, 10.0, 0.0, 0.8),
            pt("ribosome", 2000.0, 0.0, 0.0, 0.7),
        ],
    };
    let b = Tomo {
        name: "B".into(),
        truth: vec![
            pt("ribosome", 0.0, 0.0, 0.0, 1.0),
            pt("thyroglobulin", 500.0, 500.0, 500.0, 1.0),
        ],
        picks: vec![
            pt("ribosome", 75.0, 0.0, 0.0, 0.6),
            pt("thyroglobulin", 500.0, 500.0, 560.0, 0.95),
            pt("thyroglobulin", 0.0, 0.0, 0.0, 0.2),
        ],
    };
    let r = run(&cfg(Mode::Czii), &[a.clone(), b.clone()]);
    let rib = r.classes.iter().find(|c| c.name == "ribosome").unwrap();
    // ribosome: A: TP1 FP2 FN1; B: 75 Å == 0.5 x 150 -> TP1; total TP2 FP2 FN1
    assert_eq!((rib.tp, rib.fp, rib.fn_), (2, 2, 1));
    let thy = r
        .classes
        .iter()
        .find(|c| c.name == "thyroglobulin")
        .unwrap();
    // thyroglobulin hit radius 65: 60 Å away -> hit; A: FN1; B: TP1 FP1
    assert_eq!((thy.tp, thy.fp, thy.fn_), (1, 1, 1));
    let fb = |tp: f64, fp: f64, fn_: f64| {
        let (p, r) = (tp / (tp + fp), tp / (tp + fn_));
        17.0 * p * r / (16.0 * p + r)
    };
    assert!((rib.fbeta - fb(2.0, 2.0, 1.0)).abs() < 1e-12);
    assert!((thy.fbeta - fb(1.0, 1.0, 1.0)).abs() < 1e-12);
    // weights ribosome 1, thyroglobulin 2
    let want = (fb(2.0, 2.0, 1.0) + 2.0 * fb(1.0, 1.0, 1.0)) / 3.0;
    assert!((r.overall["score"].as_f64().unwrap() - want).abs() < 1e-12);
    // official normalisation: the sum of all configured weights (7)
    let mut c = cfg(Mode::Czii);
    c.normalise = Normalise::Configured;
    let r7 = run(&c, &[a.clone(), b.clone()]);
    assert!((r7.overall["score"].as_f64().unwrap() - want * 3.0 / 7.0).abs() < 1e-12);
    // custom weights
    let mut c = cfg(Mode::Czii);
    c.weights = BTreeMap::from([("ribosome".into(), 3.0), ("thyroglobulin".into(), 1.0)]);
    let rw = run(&c, &[a.clone(), b.clone()]);
    let want = (3.0 * fb(2.0, 2.0, 1.0) + fb(1.0, 1.0, 1.0)) / 4.0;
    assert!((rw.overall["score"].as_f64().unwrap() - want).abs() < 1e-12);
    // PR curve of thyroglobulin: at 0.95 TP1 FP0, at 0.2 TP1 FP1; best: keep the 0.95 pick,
    // threshold halfway to the dropped 0.2
    assert_eq!(thy.best_threshold, Some(0.575));
    let curve = &r.pr_curves["thyroglobulin"];
    assert_eq!(curve.len(), 2);
    assert_eq!(
        (curve[0].tp, curve[0].fp, curve[1].tp, curve[1].fp),
        (1, 0, 1, 1)
    );
    // confusion: the far thyroglobulin pick at the origin of B sits on a ribosome truth
    let rows: Vec<String> = serde_json::from_value(r.confusion["rows"].clone()).unwrap();
    let cols: Vec<String> = serde_json::from_value(r.confusion["columns"].clone()).unwrap();
    let m: Vec<Vec<usize>> = serde_json::from_value(r.confusion["counts"].clone()).unwrap();
    let (ri, ci) = (
        rows.iter().position(|x| x == "thyroglobulin").unwrap(),
        cols.iter().position(|x| x == "ribosome").unwrap(),
    );
    assert_eq!(m[ri][ci], 1);
}

#[test]
fn czii_empty_predictions_and_empty_truth() {
    let t = Tomo {
        name: "A".into(),
        truth: vec![pt("ribosome", 0.0, 0.0, 0.0, 1.0)],
        picks: vec![],
    };
    let r = run(&cfg(Mode::Czii), &[t]);
    assert_eq!(
        (r.classes[0].tp, r.classes[0].fp, r.classes[0].fn_),
        (0, 0, 1)
    );
    assert_eq!(r.classes[0].fbeta, 0.0);
    assert_eq!(r.classes[0].best_threshold, None);
    assert_eq!(r.overall["score"], 0.0);
    // picks that hit nothing: no threshold is best
    let miss = Tomo {
        name: "A".into(),
        truth: vec![pt("ribosome", 0.0, 0.0, 0.0, 1.0)],
        picks: vec![pt("ribosome", 500.0, 0.0, 0.0, 0.9)],
    };
    let r = run(&cfg(Mode::Czii), &[miss]);
    assert_eq!((r.classes[0].tp, r.classes[0].fp), (0, 1));
    assert_eq!(r.classes[0].best_threshold, None);
    assert_eq!(r.classes[0].best_score, 0.0);
    // picks in a tomogram without truth of that class are FP (the class has truth elsewhere)
    let a = Tomo {
        name: "A".into(),
        truth: vec![pt("ribosome", 0.0, 0.0, 0.0, 1.0)],
        picks: vec![pt("ribosome", 0.0, 0.0, 0.0, 1.0)],
    };
    let b = Tomo {
        name: "B".into(),
        truth: vec![],
        picks: vec![
            pt("ribosome", 0.0, 0.0, 0.0, 1.0),
            pt("apo-ferritin", 0.0, 0.0, 0.0, 1.0),
        ],
    };
    let r = run(&cfg(Mode::Czii), &[a, b]);
    assert_eq!(r.classes.len(), 1);
    assert_eq!(
        (r.classes[0].tp, r.classes[0].fp, r.classes[0].fn_),
        (1, 1, 0)
    );
    assert_eq!(r.ignored_picks, 1);
}

#[test]
fn picks_of_a_declared_class_without_truth_are_false() {
    // A real tomogram known to hold no ribosome: its truth table declares the class, empty.
    let t = Tomo {
        name: "real".into(),
        truth: vec![],
        picks: vec![
            pt("ribosome", 0.0, 0.0, 0.0, 0.9),
            pt("ribosome", 500.0, 0.0, 0.0, 0.8),
            pt("actin", 0.0, 0.0, 0.0, 0.9),
        ],
    };
    let declared = BTreeMap::from([("ribosome".to_string(), 150.0)]);
    let r = evaluate(&cfg(Mode::Czii), &[t], &declared, &BTreeMap::new(), 0.0).unwrap();
    assert_eq!(r.classes.len(), 1);
    let c = &r.classes[0];
    assert_eq!((c.name.as_str(), c.tp, c.fp, c.fn_), ("ribosome", 0, 2, 0));
    assert_eq!((r.overall["fp"].as_i64(), r.ignored_picks), (Some(2), 1));
}

#[test]
fn optimal_matching_beats_greedy() {
    // truth A at 0, B at 10; picks P1 at 4 (near both), P2 at -5 (near A only); radius 7.
    // Greedy takes the closest pair P1-A first and leaves P2 unmatched; optimal: P1-B, P2-A.
    let refs = [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]];
    let cands = [[4.0, 0.0, 0.0], [-5.0, 0.0, 0.0]];
    assert_eq!(greedy_matching(&refs, 7.0, &cands), 1);
    assert_eq!(optimal_matching(&refs, 7.0, &cands), vec![(0, 1), (1, 0)]);
    // czii counts both truth as hit but cannot tell one-to-one: matched mode gives TP 2 too,
    // while a duplicate costs a TP in matched mode only through the FP count
    let t = Tomo {
        name: "T".into(),
        truth: vec![pt("x", 0.0, 0.0, 0.0, 1.0), pt("x", 10.0, 0.0, 0.0, 1.0)],
        picks: vec![pt("x", 4.0, 0.0, 0.0, 1.0), pt("x", -5.0, 0.0, 0.0, 1.0)],
    };
    let mut c = cfg(Mode::Matched);
    c.radii.insert("x".into(), 14.0);
    let r = run(&c, std::slice::from_ref(&t));
    assert_eq!(
        (r.classes[0].tp, r.classes[0].fp, r.classes[0].fn_),
        (2, 0, 0)
    );
    // one pick between two particles: czii TP 2, matched TP 1
    let t2 = Tomo {
        name: "T".into(),
        truth: t.truth.clone(),
        picks: vec![pt("x", 5.0, 0.0, 0.0, 1.0)],
    };
    assert_eq!(run(&c, std::slice::from_ref(&t2)).classes[0].tp, 1);
    c.mode = Mode::Czii;
    assert_eq!(run(&c, &[t2]).classes[0].tp, 2);
}

#[test]
fn hungarian_is_optimal_on_random_cases() {
    // brute force over permutations for small matrices
    let mut s = 12345u64;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 1000) as f64 / 10.0
    };
    fn perms(n: usize, m: usize, cur: &mut Vec<usize>, best: &mut f64, cost: &[Vec<f64>]) {
        if cur.len() == n {
            let c: f64 = cur.iter().enumerate().map(|(i, &j)| cost[i][j]).sum();
            if c < *best {
                *best = c;
            }
            return;
        }
        for j in 0..m {
            if !cur.contains(&j) {
                cur.push(j);
                perms(n, m, cur, best, cost);
                cur.pop();
            }
        }
    }
    for (n, m) in [(1, 1), (2, 3), (3, 3), (4, 5), (5, 5)] {
        for _ in 0..20 {
            let cost: Vec<Vec<f64>> = (0..n).map(|_| (0..m).map(|_| rnd()).collect()).collect();
            let a = hungarian(&cost);
            let got: f64 = a.iter().enumerate().map(|(i, &j)| cost[i][j]).sum();
            let mut best = f64::INFINITY;
            perms(n, m, &mut Vec::new(), &mut best, &cost);
            assert!((got - best).abs() < 1e-9, "{got} vs {best}");
        }
    }
}

#[test]
fn shrec_uses_dilated_instance_masks() {
    // 10^3 volume, 10 Å voxels; instance 1 (ribosome) occupies voxel (5,5,5) only
    let mut data = vec![0u32; 1000];
    data[555] = 1;
    let im = InstanceMap {
        data,
        shape: [10, 10, 10],
        voxel: [10.0; 3],
        origin: [0.0; 3],
    };
    assert_eq!(im.hit(&[50.0, 50.0, 50.0], 0.0), 1);
    assert_eq!(im.hit(&[64.0, 50.0, 50.0], 0.0), 0); // rounds to x = 6
    assert_eq!(im.hit(&[64.0, 50.0, 50.0], 1.0), 1);
    assert_eq!(im.hit(&[64.0, 64.0, 50.0], 1.0), 0); // (6,6): sqrt 2 > 1
    assert_eq!(im.hit(&[64.0, 64.0, 50.0], 1.5), 1);
    let t = Tomo {
        name: "T".into(),
        truth: vec![Pt {
            class: "ribosome".into(),
            p: [50.0, 50.0, 50.0],
            score: 1.0,
            instance: 1,
        }],
        picks: vec![
            pt("ribosome", 64.0, 50.0, 50.0, 0.9),
            pt("ribosome", 10.0, 10.0, 10.0, 0.8),
        ],
    };
    let mut c = cfg(Mode::Shrec);
    c.mode = Mode::Shrec;
    let r = evaluate(
        &c,
        &[t],
        &BTreeMap::new(),
        &BTreeMap::from([("T".to_string(), im)]),
        1.0,
    )
    .unwrap();
    assert_eq!(
        (r.classes[0].tp, r.classes[0].fp, r.classes[0].fn_),
        (1, 1, 0)
    );
}

#[test]
fn tune_beta_chooses_the_threshold_of_the_f_score_it_names() {
    // 3 ribosomes; picks: two sure hits (0.9, 0.8), four misses at 0.3, a late hit at 0.2.
    // F4 favours recall: keep down to 0.2 (TP3 FP4: F4 0.927 > 0.68 at 0.8), threshold 0.1
    // (nothing is dropped: halfway to 0); F1 weighs both: keep down to 0.8 (TP2 FP0: F1 0.8 >
    // 0.6 at 0.2), threshold 0.55 (halfway to the dropped 0.3).
    let mut picks = vec![
        pt("ribosome", 0.0, 0.0, 0.0, 0.9),
        pt("ribosome", 1000.0, 0.0, 0.0, 0.8),
        pt("ribosome", 2000.0, 0.0, 0.0, 0.2),
    ];
    picks.extend((0..4).map(|k| pt("ribosome", 500.0 * k as f64, 1000.0, 0.0, 0.3)));
    let t = Tomo {
        name: "A".into(),
        truth: (0..3)
            .map(|k| pt("ribosome", 1000.0 * k as f64, 0.0, 0.0, 1.0))
            .collect(),
        picks,
    };
    let f4 = run(&cfg(Mode::Czii), std::slice::from_ref(&t));
    assert_eq!(f4.classes[0].best_threshold, Some(0.1));
    assert!(
        (f4.classes[0].best_score - 17.0 * (3.0 / 7.0) / (16.0 * 3.0 / 7.0 + 1.0)).abs() < 1e-12
    );
    let mut c = cfg(Mode::Czii);
    c.tune_beta = 1.0;
    let f1 = run(&c, &[t]);
    assert_eq!(f1.classes[0].best_threshold, Some(0.55));
    assert!((f1.classes[0].best_score - 0.8).abs() < 1e-12);
    // the scores themselves do not depend on tune_beta
    assert_eq!(f1.classes[0].fbeta, f4.classes[0].fbeta);
    assert_eq!(f1.tune_beta, 1.0);
}
