use super::*;
use crate::imod::particles_to_mod;
use crate::particles::StarFlavour;

fn classes() -> Vec<ClassInfo> {
    vec![
        ClassInfo {
            id: 1,
            name: "apo-ferritin".into(),
            radius_a: 60.0,
        },
        ClassInfo {
            id: 4,
            name: "ribosome".into(),
            radius_a: 150.0,
        },
    ]
}

/// Two classes, rotated particles, a non-cubic tomogram and fractional positions.
fn table() -> ParticleTable {
    let cls = classes();
    let particles = (0..6)
        .map(|i| {
            let c = &cls[i % 2];
            let q = Quat::from_axis_angle([1.0, 0.3 * i as f64, -2.0], 17.0 + 29.0 * i as f64);
            let (rot, tilt, psi) = relion_angles(&q.to_matrix());
            Particle {
                class: c.name.clone(),
                class_id: c.id,
                x: 10.0 * (12.25 + 31.0 * i as f64),
                y: 10.0 * (40.5 + 13.0 * i as f64),
                z: 10.0 * (3.0 + 7.5 * i as f64),
                rot,
                tilt,
                psi,
                q: q.to_array(),
                instance: i as u32 + 1,
                score: 0.5 + 0.05 * i as f64,
            }
        })
        .collect();
    ParticleTable {
        tomogram: TomogramInfo {
            name: "TS_7".into(),
            shape: [50, 140, 200],
            voxel_size: [10.0; 3],
            origin: [0.0; 3],
        },
        classes: cls,
        particles,
    }
}

fn opts() -> ReadOptions {
    ReadOptions {
        classes: classes(),
        voxel_size: Some(10.0),
        shape: Some([50, 140, 200]),
        ..Default::default()
    }
}

fn quat(p: &Particle) -> Quat {
    Quat {
        w: p.q[0],
        x: p.q[1],
        y: p.q[2],
        z: p.q[3],
    }
}

/// The read table matches the written one: name, classes, positions, and (where the format
/// carries them) orientations and scores.
fn same(back: &[ParticleTable], t: &ParticleTable, orient: bool, score: bool, what: &str) {
    assert_eq!(back.len(), 1, "{what}");
    let b = &back[0];
    assert_eq!(b.tomogram.name, t.tomogram.name, "{what}");
    assert_eq!(b.tomogram.voxel_size, t.tomogram.voxel_size, "{what}");
    assert_eq!(b.particles.len(), t.particles.len(), "{what}");
    let mut got = b.particles.clone();
    got.sort_by(|a, b| a.x.total_cmp(&b.x));
    for (g, w) in got.iter().zip(&t.particles) {
        assert_eq!((&g.class, g.class_id), (&w.class, w.class_id), "{what}");
        for (a, b) in [(g.x, w.x), (g.y, w.y), (g.z, w.z)] {
            assert!((a - b).abs() < 0.01, "{what}: {a} vs {b}");
        }
        if orient {
            assert!(quat(g).angle_to(&quat(w)) < 0.05, "{what}: orientation");
        }
        if score {
            assert!((g.score - w.score).abs() < 1e-5, "{what}: score");
        }
    }
}

#[test]
fn every_writer_reads_back() {
    let t = table();
    let r = |bytes: &[u8], f: Format, o: &ReadOptions| read(bytes, f, "picks", "stem", o).unwrap();
    let r5 = t.to_star(StarFlavour::Relion5);
    // RELION 5 carries its own sizes: no shape or voxel size needed.
    let bare = ReadOptions {
        classes: classes(),
        ..Default::default()
    };
    same(
        &r(r5.as_bytes(), Format::Star, &bare),
        &t,
        true,
        true,
        "relion5",
    );
    assert_eq!(
        r(r5.as_bytes(), Format::Star, &bare)[0].tomogram.shape,
        t.tomogram.shape
    );
    let r4 = t.to_star(StarFlavour::Relion4);
    same(
        &r(r4.as_bytes(), Format::Star, &opts()),
        &t,
        true,
        true,
        "relion4",
    );
    same(
        &r(t.to_csv().as_bytes(), Format::Csv, &opts()),
        &t,
        true,
        true,
        "csv",
    );
    same(
        &r(t.to_czii_csv().as_bytes(), Format::Csv, &opts()),
        &t,
        false,
        false,
        "czii",
    );
    let tbl = t.to_dynamo_tbl(1);
    let mut o = opts();
    o.tomogram = Some("TS_7".into());
    same(
        &r(tbl.as_bytes(), Format::Dynamo, &o),
        &t,
        true,
        true,
        "dynamo",
    );
    let m = particles_to_mod(&t);
    same(&r(&m, Format::Imod, &o), &t, false, false, "imod");
    // copick: one file per object.
    let mut all = Vec::new();
    for c in &t.classes {
        let doc = t.to_copick(&c.name, "u", "0", None).unwrap();
        all.extend(
            r(doc.as_bytes(), Format::Copick, &opts())
                .remove(0)
                .particles,
        );
    }
    let mut merged = r(
        t.to_copick("ribosome", "u", "0", None).unwrap().as_bytes(),
        Format::Copick,
        &opts(),
    );
    merged[0].particles = all;
    same(&merged, &t, true, true, "copick");
}

#[test]
fn several_tomograms_give_several_tables_and_one_can_be_chosen() {
    let a = table();
    let mut b = table();
    b.tomogram.name = "TS_8".into();
    b.particles.truncate(2);
    let mut csv = a.to_csv();
    for l in b.to_csv().lines().skip(1) {
        csv.push_str(l);
        csv.push('\n');
    }
    let both = read(csv.as_bytes(), Format::Csv, "x.csv", "x", &opts()).unwrap();
    let names: Vec<_> = both
        .iter()
        .map(|t| (t.tomogram.name.as_str(), t.particles.len()))
        .collect();
    assert_eq!(names, [("TS_7", 6), ("TS_8", 2)]);
    let mut o = opts();
    o.tomogram = Some("TS_8".into());
    let one = read(csv.as_bytes(), Format::Csv, "x.csv", "x", &o).unwrap();
    assert_eq!((one.len(), one[0].particles.len()), (1, 2));
    o.tomogram = Some("TS_9".into());
    let e = read(csv.as_bytes(), Format::Csv, "x.csv", "x", &o)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("TS_9") && e.contains("\"TS_7\", \"TS_8\""),
        "{e}"
    );
}

#[test]
fn plain_csv_needs_its_unit_and_honours_the_origin() {
    let text = "x,y,z,class\n10,20,5,ribosome\n";
    let e = read(text.as_bytes(), Format::Csv, "p.csv", "p", &opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("p.csv") && e.contains("unit"), "{e}");
    let mut o = opts();
    o.unit = Some(Unit::Voxel);
    let t = read(text.as_bytes(), Format::Csv, "p.csv", "p", &o).unwrap();
    assert_eq!(
        (t[0].particles[0].x, t[0].tomogram.name.as_str()),
        (100.0, "p")
    );
    o.origin = Origin::Corner;
    assert_eq!(
        read(text.as_bytes(), Format::Csv, "p.csv", "p", &o).unwrap()[0].particles[0].x,
        95.0
    );
    o.unit = Some(Unit::Angstrom);
    o.origin = Origin::VoxelCentre;
    assert_eq!(
        read(text.as_bytes(), Format::Csv, "p.csv", "p", &o).unwrap()[0].particles[0].y,
        20.0
    );
}

#[test]
fn bad_input_names_file_row_and_field() {
    let t = table();
    let err = |text: &str, f: Format, o: &ReadOptions| {
        read(text.as_bytes(), f, "in.x", "in", o)
            .unwrap_err()
            .to_string()
    };
    // A missing column.
    let no_z = t
        .to_star(StarFlavour::Relion4)
        .replace("_rlnCoordinateZ", "_rlnSomethingElse");
    let e = err(&no_z, Format::Star, &opts());
    assert!(e.contains("in.x") && e.contains("_rlnCoordinateZ"), "{e}");
    // A pick outside the tomogram.
    let mut small = opts();
    small.shape = Some([50, 140, 100]);
    let e = err(&t.to_star(StarFlavour::Relion4), Format::Star, &small);
    assert!(e.contains("in.x: row 4: x") && e.contains("outside"), "{e}");
    // A unit that contradicts the header: voxels given as Å.
    let mut o = opts();
    o.unit = Some(Unit::Voxel);
    let e = err("x,y,z,class\n1500,200,30,ribosome\n", Format::Csv, &o);
    assert!(e.contains("row 1: x") && e.contains("unit"), "{e}");
    // A voxel size that contradicts the file's.
    let mut o = ReadOptions {
        classes: classes(),
        voxel_size: Some(5.0),
        ..Default::default()
    };
    let e = err(&t.to_star(StarFlavour::Relion5), Format::Star, &o);
    assert!(e.contains("10 Å") && e.contains("5 Å"), "{e}");
    // An unknown class name and an unknown class number.
    o.voxel_size = Some(10.0);
    o.unit = Some(Unit::Voxel);
    let e = err("x,y,z,class\n1,2,3,proteasome\n", Format::Csv, &o);
    assert!(
        e.contains("in.x: row 1: class = \"proteasome\"") && e.contains("apo-ferritin, ribosome"),
        "{e}"
    );
    let e = err(
        &t.to_star(StarFlavour::Relion4).replace(" 4 2 ", " 9 2 "),
        Format::Star,
        &opts(),
    );
    assert!(
        e.contains("row 2: _rlnClassNumber = 9") && e.contains("4 = ribosome"),
        "{e}"
    );
    // Not a number.
    let e = err("x,y,z,class\n1,abc,3,ribosome\n", Format::Csv, &o);
    assert!(e.contains("row 1: y = \"abc\""), "{e}");
    // No class column with two classes declared.
    let e = err("x,y,z\n1,2,3\n", Format::Csv, &o);
    assert!(e.contains("no class column"), "{e}");
    // A short Dynamo row, a copick file of another object.
    let e = err("1 1 1 0 0 0\n", Format::Dynamo, &o);
    assert!(e.contains("row 1 has 6 columns"), "{e}");
    let e = err(
        r#"{"pickable_object_name": "actin", "points": []}"#,
        Format::Copick,
        &o,
    );
    assert!(e.contains("pickable_object_name = \"actin\""), "{e}");
    // Garbage.
    assert!(err("{", Format::Copick, &o).contains("not JSON"));
    assert!(err("IMODV1.2", Format::Imod, &o).contains("in.x"));
    assert!(Format::from_path(std::path::Path::new("a.xyz"))
        .unwrap_err()
        .to_string()
        .contains(".tbl"));
}

#[test]
fn star_written_by_other_programs_reads() {
    // A RELION 5 file in the style `starfile` writes: no data_global, sizes from tomograms.star.
    let text = "\ndata_particles\n\nloop_\n_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n\
                _rlnCenteredCoordinateYAngst #3\n_rlnCenteredCoordinateZAngst #4\n_rlnClassNumber #5\n\
                TS_1 0.0 -100.0 50.0 1\nTS_1 200.0 0.0 0.0 4\n";
    let tomos = tomograms_star(
        "data_global\nloop_\n_rlnTomoName\n_rlnTomoSizeX\n_rlnTomoSizeY\n_rlnTomoSizeZ\n\
         _rlnTomoTiltSeriesPixelSize\n_rlnTomoTomogramBinning\nTS_1 100 80 40 2.5 4\n",
        "tomograms.star",
    )
    .unwrap();
    let o = ReadOptions {
        classes: classes(),
        tomograms_star: tomos,
        ..Default::default()
    };
    let t = read(text.as_bytes(), Format::Star, "p.star", "p", &o).unwrap();
    assert_eq!(
        (t.len(), t[0].tomogram.shape, t[0].tomogram.voxel_size[0]),
        (1, [40, 80, 100], 10.0)
    );
    let v = t[0].voxel_coords(&t[0].particles[0]);
    assert_eq!(v, [50.0, 30.0, 25.0]);
    // Without sizes the error says where to find them.
    let o = ReadOptions {
        classes: classes(),
        voxel_size: Some(10.0),
        ..Default::default()
    };
    let e = read(text.as_bytes(), Format::Star, "p.star", "p", &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tomograms.star") && e.contains("shape"), "{e}");
}
