//! The metrics against independent references (tests/fixtures/metrics_reference.safetensors,
//! written by scripts/make_metric_fixtures.py with numpy/scipy), on known matrices and
//! constructed sets, and `ganforge train-classifier` / `ganforge eval` end to end.

use ganforge::io::{load_checkpoint, Checkpoint};
use ganforge::metrics::classifier::{Arch, Classifier, ClassifierInfo, LoadedClassifier};
use ganforge::metrics::frechet::{fd, frechet_parts, GaussianStats};
use ganforge::metrics::kid::{kid, kid_with_subsets, KidOptions};
use ganforge::metrics::linalg::{matmul_square, sqrtm_psd, sym_eigen};
use ganforge::metrics::prdc::prdc;
use ganforge::metrics::swd::{laplacian_pyramid, swd, ImageBatch, SwdOptions};
use ganforge::metrics::Features;
use ganforge::{Device, Rng};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ganforge");

fn fixture() -> Checkpoint {
    load_checkpoint(Path::new("tests/fixtures/metrics_reference.safetensors")).unwrap()
}

fn feats(c: &Checkpoint, name: &str) -> Features {
    let t = c.get(name).unwrap();
    Features::from_f32(&t.to_vec(), t.dims()[1]).unwrap()
}

fn meta(c: &Checkpoint, key: &str) -> f64 {
    c.meta(key)
        .unwrap_or_else(|| panic!("fixture lacks {key}"))
        .parse()
        .unwrap()
}

fn indices(c: &Checkpoint, name: &str) -> Vec<Vec<usize>> {
    let t = c.get(name).unwrap();
    let cols = t.dims()[1];
    t.to_vec()
        .chunks(cols)
        .map(|r| r.iter().map(|&v| v as usize).collect())
        .collect()
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-300)
}

#[test]
fn frechet_distance_matches_scipy_to_1e_6() {
    let c = fixture();
    for case in ["full", "wide", "lowrank"] {
        let got = fd(
            &feats(&c, &format!("fd.{case}.x")),
            &feats(&c, &format!("fd.{case}.y")),
        )
        .unwrap();
        let sqrtm = meta(&c, &format!("fd.{case}.sqrtm"));
        let eigh = meta(&c, &format!("fd.{case}.eigh"));
        println!(
            "fd {case}: ours {got:.15}, scipy sqrtm {sqrtm:.15} (rel {:.1e}), numpy eigh {eigh:.15} (rel {:.1e})",
            rel(got, sqrtm),
            rel(got, eigh)
        );
        assert!(rel(got, sqrtm) < 1e-6, "{case}: {got} vs scipy {sqrtm}");
        assert!(rel(got, eigh) < 1e-6, "{case}: {got} vs eigh {eigh}");
    }
    // A set against itself: 0 up to rounding (scipy gives ~1e-13 too).
    let x = feats(&c, "fd.same.x");
    let same = fd(&x, &x).unwrap();
    assert!(same.abs() < 1e-9, "{same}");
}

#[test]
fn kid_matches_numpy_on_the_same_subsets() {
    let c = fixture();
    let (x, y) = (feats(&c, "kid.x"), feats(&c, "kid.y"));
    let subsets: Vec<(Vec<usize>, Vec<usize>)> = indices(&c, "kid.sx")
        .into_iter()
        .zip(indices(&c, "kid.sy"))
        .collect();
    let got = kid_with_subsets(&x, &y, &subsets).unwrap();
    let want: Vec<f64> = serde_json::from_str::<Vec<String>>(c.meta("kid.values").unwrap())
        .unwrap()
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for (g, w) in got.values.iter().zip(&want) {
        assert!(rel(*g, *w) < 1e-6, "subset: {g} vs {w}");
    }
    for (name, g) in [("mean", got.mean), ("std", got.std), ("stderr", got.stderr)] {
        let w = meta(&c, &format!("kid.{name}"));
        println!(
            "kid {name}: ours {g:.15}, numpy {w:.15} (rel {:.1e})",
            rel(g, w)
        );
        assert!(rel(g, w) < 1e-6, "{name}: {g} vs {w}");
    }
    assert_eq!(got.subset_size, 100);
}

#[test]
fn precision_recall_density_coverage_match_the_reference() {
    let c = fixture();
    let p = prdc(&feats(&c, "prdc.real"), &feats(&c, "prdc.fake"), 3).unwrap();
    for (name, g) in [
        ("precision", p.precision),
        ("recall", p.recall),
        ("density", p.density),
        ("coverage", p.coverage),
    ] {
        let w = meta(&c, &format!("prdc.{name}"));
        assert!((g - w).abs() < 1e-12, "{name}: {g} vs {w}");
    }
}

#[test]
fn laplacian_pyramid_matches_progans_scipy_code() {
    let c = fixture();
    let t = c.get("swd.images").unwrap();
    let d = t.dims();
    let batch = ImageBatch {
        data: t.to_vec(),
        n: d[0],
        c: d[1],
        h: d[2],
        w: d[3],
    };
    let pyr = laplacian_pyramid(&batch, 3);
    for (l, level) in pyr.iter().enumerate() {
        let want = c.get(&format!("swd.level{l}")).unwrap();
        assert_eq!(&[level.n, level.c, level.h, level.w][..], want.dims());
        let max = level
            .data
            .iter()
            .zip(want.to_vec())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max < 1e-5, "level {l}: max diff {max}");
    }
}

/// `Q diag(values) Q^T` with `Q` a product of random Householder reflections.
fn with_spectrum(values: &[f64], rng: &mut Rng) -> Vec<f64> {
    let n = values.len();
    let mut q = vec![0.0; n * n];
    for i in 0..n {
        q[i * n + i] = 1.0;
    }
    for _ in 0..3 {
        let v: Vec<f64> = (0..n).map(|_| rng.normal() as f64).collect();
        let vv: f64 = v.iter().map(|x| x * x).sum();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = if i == j { 1.0 } else { 0.0 } - 2.0 * v[i] * v[j] / vv;
            }
        }
        q = matmul_square(&q, &h, n);
    }
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n)
                .map(|k| q[i * n + k] * values[k] * q[j * n + k])
                .sum();
        }
    }
    a
}

#[test]
fn eigendecomposition_of_known_matrices() {
    // Tridiagonal Toeplitz (2, -1): eigenvalues 2 - 2 cos(k pi / (n + 1)).
    let n = 40;
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        a[i * n + i] = 2.0;
        if i + 1 < n {
            a[i * n + i + 1] = -1.0;
            a[(i + 1) * n + i] = -1.0;
        }
    }
    let e = sym_eigen(&a, n).unwrap();
    for (k, v) in e.values.iter().enumerate() {
        let want = 2.0 - 2.0 * ((k + 1) as f64 * std::f64::consts::PI / (n + 1) as f64).cos();
        assert!((v - want).abs() < 1e-13, "eigenvalue {k}: {v} vs {want}");
    }
    // A 128x128 matrix with a known spectrum spanning 1e-6 .. 1e3, and one with a repeated
    // eigenvalue: values to 1e-12 of the largest, V orthogonal, A V = V diag(values).
    let mut rng = Rng::new(5);
    let spread: Vec<f64> = (0..128)
        .map(|i| 1e-6 * 10f64.powf(9.0 * i as f64 / 127.0))
        .collect();
    let repeated: Vec<f64> = (0..32)
        .map(|i| if i < 20 { 3.0 } else { i as f64 })
        .collect();
    for spectrum in [spread, repeated] {
        let n = spectrum.len();
        let a = with_spectrum(&spectrum, &mut rng);
        let e = sym_eigen(&a, n).unwrap();
        let scale = spectrum.iter().cloned().fold(0.0, f64::max);
        let mut sorted = spectrum.clone();
        sorted.sort_by(|x, y| x.total_cmp(y));
        for (g, w) in e.values.iter().zip(&sorted) {
            assert!((g - w).abs() < 1e-12 * scale, "{g} vs {w}");
        }
        let v = &e.vectors;
        for i in 0..n {
            for j in 0..n {
                let vtv: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((vtv - want).abs() < 1e-12, "V^T V [{i}][{j}] = {vtv}");
                let av: f64 = (0..n).map(|k| a[i * n + k] * v[k * n + j]).sum();
                assert!((av - v[i * n + j] * e.values[j]).abs() < 1e-11 * scale);
            }
        }
        println!("n = {n}: {} Jacobi sweeps", e.sweeps);
        // The PSD square root squares back.
        let r = sqrtm_psd(&a, n).unwrap();
        let rr = matmul_square(&r, &r, n);
        for (x, y) in rr.iter().zip(&a) {
            assert!((x - y).abs() < 1e-10 * scale);
        }
    }
}

fn gaussian_features(n: usize, d: usize, shift: f64, scale: f64, seed: u64) -> Features {
    let mut rng = Rng::new(seed);
    Features::new(
        (0..n * d)
            .map(|_| shift + scale * rng.normal() as f64)
            .collect(),
        d,
    )
    .unwrap()
}

#[test]
fn two_samples_of_one_distribution_are_close_and_noise_is_far() {
    let d = 32;
    let a = gaussian_features(2000, d, 0.0, 1.0, 1);
    let b = gaussian_features(2000, d, 0.0, 1.0, 2);
    let noise = gaussian_features(2000, d, 0.5, 2.0, 3);
    let same = fd(&a, &b).unwrap();
    let far = fd(&a, &noise).unwrap();
    // The finite-sample bias of the distance is about d^2 / n = 0.5 here.
    assert!(same < 1.0 && far > 30.0 * same, "{same} vs {far}");
    let parts = frechet_parts(
        &GaussianStats::from_features(&a).unwrap(),
        &GaussianStats::from_features(&noise).unwrap(),
    )
    .unwrap();
    // Exact for these Gaussians: d * 0.5^2 + d * (2 - 1)^2 = 40.
    assert!((parts.distance - 40.0).abs() < 5.0, "{parts:?}");
    let opts = KidOptions {
        subsets: 10,
        subset_size: 500,
        seed: 0,
    };
    let k_same = kid(&a, &b, &opts).unwrap();
    let k_far = kid(&a, &noise, &opts).unwrap();
    assert!(k_same.mean.abs() < 3.0 * k_same.std + 1e-3, "{k_same:?}");
    assert!(
        k_far.mean > 100.0 * k_same.mean.abs().max(1e-4),
        "{k_far:?}"
    );
    let p_same = prdc(&a, &b, 3).unwrap();
    let p_far = prdc(&a, &noise, 3).unwrap();
    // k-NN balls underestimate in 32-d at n = 2000 (about 0.7 for identical distributions).
    assert!(p_same.precision > 0.6 && p_same.recall > 0.6, "{p_same:?}");
    assert!(p_far.precision < p_same.precision, "{p_far:?}");
}

#[test]
fn precision_and_recall_on_constructed_sets() {
    // Real: a 10x10 grid (k = 3 balls of radius 1 around each point, spacing 1).
    let real: Vec<f64> = (0..100)
        .flat_map(|i| [(i % 10) as f64, (i / 10) as f64])
        .collect();
    let real = Features::new(real, 2).unwrap();
    let p = prdc(&real, &real, 3).unwrap();
    assert_eq!((p.precision, p.recall, p.coverage), (1.0, 1.0, 1.0));
    // Fakes: half on the grid, half far away; the far half form their own tight cluster.
    let mut fake = Vec::new();
    for i in 0..50 {
        fake.extend([(i % 10) as f64 + 0.1, (i / 10) as f64]);
    }
    for i in 0..50 {
        fake.extend([100.0 + (i % 10) as f64 * 0.01, 100.0]);
    }
    let p = prdc(&real, &Features::new(fake, 2).unwrap(), 3).unwrap();
    assert_eq!(p.precision, 0.5);
    // Rows 0-4 of the grid are covered by the fakes' balls (radius ~1); rows 5-9 are not.
    assert!(p.recall >= 0.5 && p.recall <= 0.6, "{p:?}");
    assert!(p.coverage >= 0.5 && p.coverage <= 0.6, "{p:?}");
    // All fakes collapsed onto one real point: precision 1, recall and coverage tiny.
    let collapsed = Features::new([3.0, 3.0].repeat(100), 2).unwrap();
    let p = prdc(&real, &collapsed, 3).unwrap();
    assert_eq!(p.precision, 1.0);
    assert!(p.recall <= 0.01 && p.coverage <= 0.05, "{p:?}");
}

#[test]
fn sliced_wasserstein_is_zero_for_identical_images_and_grows_with_noise() {
    let mut rng = Rng::new(0);
    let (n, c, h) = (16, 3, 32);
    let data: Vec<f32> = (0..n * c * h * h)
        .map(|i| ((i % 17) as f32 / 8.5 - 1.0) * 0.5 + 0.3 * rng.normal())
        .collect();
    let a = ImageBatch {
        data: data.clone(),
        n,
        c,
        h,
        w: h,
    };
    let opts = SwdOptions {
        patches_per_image: 16,
        ..SwdOptions::default()
    };
    let same = swd(&a, &a.clone(), &opts).unwrap();
    assert_eq!(same.mean, 0.0);
    assert_eq!(
        same.levels.iter().map(|l| l.0).collect::<Vec<_>>(),
        vec![32, 16]
    );
    let mut noisy = |s: f32| ImageBatch {
        data: data.iter().map(|v| v + s * rng.normal()).collect(),
        ..a.clone()
    };
    let little = swd(&a, &noisy(0.05), &opts).unwrap().mean;
    let lots = swd(&a, &noisy(1.0), &opts).unwrap().mean;
    assert!(0.0 < little && little < lots, "{little} vs {lots}");
}

#[test]
fn classifier_checkpoints_round_trip_and_detect_edits() {
    let dir = std::env::temp_dir().join(format!("ganforge-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lenet.safetensors");
    let net = Classifier::new(Arch::Lenet, 10, &mut Rng::new(1), &Device::Cpu).unwrap();
    let info = ClassifierInfo {
        dataset: "digits".into(),
        class_names: (0..10).map(|c| c.to_string()).collect(),
        test_accuracy: Some(0.5),
        test_images: 1,
        train_images: 2,
        epochs: 3,
        train_seconds: 4.0,
    };
    net.save(&path, &info).unwrap();
    let loaded = Classifier::load(&path).unwrap();
    assert_eq!(loaded.hash, net.hash());
    assert_eq!(loaded.info, info);
    assert_eq!(loaded.net_name(), "lenet_digits");
    let mut rng = Rng::new(2);
    let x: Vec<f32> = (0..3 * 784).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let (e1, e2) = (net.embed(&x, 2).unwrap(), loaded.net.embed(&x, 3).unwrap());
    assert_eq!(e1.features, e2.features);
    assert_eq!(e1.features.n, 3);
    // Edit one weight but keep the metadata: the hash check refuses the file.
    let ckpt = load_checkpoint(&path).unwrap();
    let mut tensors = ckpt.tensors.clone();
    let w = &tensors[0].1;
    let mut v = w.to_vec();
    v[0] += 1.0;
    tensors[0].1 = ganforge::Tensor::from_vec(v, w.shape().clone()).unwrap();
    ganforge::io::save_checkpoint(&path, &tensors, &ckpt.metadata).unwrap();
    let e = Classifier::load(&path)
        .err()
        .expect("an edited file must fail")
        .to_string();
    assert!(e.contains("changed after training"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

fn ganforge(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run ganforge");
    assert!(
        out.status.success(),
        "ganforge {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ganforge-metrics-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `ganforge train` of a tiny `model` on 200 built-in digits for `steps` steps into `run`.
fn train_small_digits_gan(run: &str, model: &str, steps: &str, extra: &[&str]) {
    let mut args = vec![
        "train",
        "--data",
        "digits",
        "--digits-count",
        "200",
        "--model",
        model,
        "--steps",
        steps,
        "--batch-size",
        "16",
        "--ngf",
        "4",
        "--ndf",
        "4",
        "--latent-dim",
        "8",
        "--out",
        run,
    ];
    args.extend_from_slice(extra);
    ganforge(&args);
}

/// `ganforge eval --real-vs-real` of `ckpt` with classifier `clf`: `n` samples per set, 4
/// kernel-distance subsets of `subset_size`, JSON to `report`; returns stdout.
fn eval_with_real_vs_real(
    ckpt: &str,
    clf: &str,
    n: &str,
    subset_size: &str,
    report: &str,
    extra: &[&str],
) -> String {
    let mut args = vec![
        "eval",
        "--checkpoint",
        ckpt,
        "--classifier",
        clf,
        "--n",
        n,
        "--kid-subsets",
        "4",
        "--kid-subset-size",
        subset_size,
        "--real-vs-real",
        "--json",
        report,
    ];
    args.extend_from_slice(extra);
    ganforge(&args)
}

#[test]
fn train_classifier_then_eval_a_generator_end_to_end() {
    let dir = tmp("e2e");
    let s = |p: PathBuf| p.display().to_string();
    let clf = s(dir.join("lenet_digits.safetensors"));
    let out = ganforge(&[
        "train-classifier",
        "--data",
        "digits",
        "--digits-count",
        "600",
        "--epochs",
        "1",
        "--batch-size",
        "50",
        "--out",
        &clf,
    ]);
    assert!(out.contains("test accuracy"), "{out}");
    let clf_json = read_json(&dir.join("lenet_digits.json"));
    let hash = clf_json["feature_net"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 16);
    assert!(clf_json["test_accuracy"].as_f64().unwrap() > 0.0);

    let run = s(dir.join("run"));
    train_small_digits_gan(&run, "cgan", "4", &[]);
    let report = s(dir.join("eval.json"));
    let ckpt = s(dir.join("run").join("checkpoint.safetensors"));
    let out = eval_with_real_vs_real(
        &ckpt,
        &clf,
        "120",
        "50",
        &report,
        &["--swd", "--swd-images", "16"],
    );
    assert!(out.contains("fd_lenet_digits"), "{out}");
    let j = read_json(Path::new(&report));
    assert_eq!(j["feature_net"].as_str(), Some(hash.as_str()));
    for key in [
        "fd_lenet_digits",
        "kid_lenet_digits",
        "kid_std_lenet_digits",
        "precision_lenet_digits",
        "recall_lenet_digits",
        "cond_acc_lenet_digits",
        "classes_covered_lenet_digits",
        "swd_x1e3_avg",
    ] {
        assert!(j[key].is_number(), "{key} missing in {j}");
        assert!(
            j["real_vs_real"][key].is_number(),
            "real_vs_real.{key} missing"
        );
    }
    assert_eq!(
        j["class_histogram_lenet_digits"].as_array().unwrap().len(),
        10
    );
    // An untrained 4-step generator is far from the data; the held-out real set is close.
    let (g, r) = (
        j["fd_lenet_digits"].as_f64().unwrap(),
        j["real_vs_real"]["fd_lenet_digits"].as_f64().unwrap(),
    );
    assert!(g > r, "generated {g} vs real floor {r}");

    // A model trained at another size than the data's (digits drawn at 32x32): the real
    // images are taken at the model's size too, so both sides take the same resize to the
    // network's 28x28 input, and eval says so.
    let run32 = s(dir.join("run32"));
    train_small_digits_gan(&run32, "dcgan", "2", &["--image-size", "32"]);
    let report32 = s(dir.join("eval32.json"));
    let ckpt32 = s(dir.join("run32").join("checkpoint.safetensors"));
    let out = eval_with_real_vs_real(&ckpt32, &clf, "100", "40", &report32, &[]);
    assert!(
        out.contains("the model was trained at 32x32; the real images are resized to 32x32"),
        "{out}"
    );
    let j = read_json(Path::new(&report32));
    let (g, r) = (
        j["fd_lenet_digits"].as_f64().unwrap(),
        j["real_vs_real"]["fd_lenet_digits"].as_f64().unwrap(),
    );
    assert!(
        g.is_finite() && r.is_finite() && g > r,
        "generated {g} vs real floor {r}"
    );
}

#[test]
fn eval_reports_mode_coverage_for_the_ring() {
    let dir = tmp("ring");
    let run = dir.join("run").display().to_string();
    ganforge(&[
        "train",
        "--data",
        "ring8",
        "--steps",
        "5",
        "--batch-size",
        "32",
        "--hidden",
        "16",
        "--out",
        &run,
    ]);
    let report = dir.join("ring.json").display().to_string();
    let ckpt = dir
        .join("run")
        .join("checkpoint.safetensors")
        .display()
        .to_string();
    let out = ganforge(&[
        "eval",
        "--checkpoint",
        &ckpt,
        "--real-vs-real",
        "--json",
        &report,
    ]);
    assert!(out.contains("modes_covered_ring8"), "{out}");
    let j = read_json(Path::new(&report));
    assert_eq!(j["real_vs_real"]["modes_covered_ring8"].as_f64(), Some(8.0));
    assert!(j["real_vs_real"]["high_quality_ring8"].as_f64().unwrap() > 0.97);
    assert!(j["modes_covered_ring8"].is_number() && j["high_quality_ring8"].is_number());
}

/// The first `n_train` training and `n_test` test images of the shared MNIST files, and the
/// committed LeNet; `None` (saying what is missing) when either is absent.
fn shared_mnist(
    n_train: usize,
    n_test: usize,
) -> Option<(
    ganforge::data::Dataset,
    ganforge::data::Dataset,
    LoadedClassifier,
)> {
    use ganforge::data::{DataSpec, LoadOptions, Split};
    let data = Path::new("../shared/data/mnist");
    let clf = Path::new("assets/classifiers/lenet_mnist.safetensors");
    if !data.exists() || !clf.exists() {
        eprintln!("skipped: needs {} and {}", data.display(), clf.display());
        return None;
    }
    let spec = DataSpec::Mnist(data.to_path_buf());
    let load = |split, n| {
        let mut ds = spec
            .load_images(&LoadOptions {
                split,
                ..LoadOptions::default()
            })
            .unwrap();
        ds.truncate(n);
        ds
    };
    Some((
        load(Split::Train, n_train),
        load(Split::Test, n_test),
        Classifier::load(clf).unwrap(),
    ))
}

/// On the shared MNIST files with the committed LeNet (skipped, saying so, when either is
/// absent): the test split against training images is close, noise images are far.
#[test]
fn real_mnist_splits_are_close_and_noise_is_far() {
    let Some((train, test, c)) = shared_mnist(1000, 1000) else {
        return;
    };
    let f_train = c.net.embed(&train.images, 250).unwrap().features;
    let f_test = c.net.embed(&test.images, 250).unwrap().features;
    let mut rng = Rng::new(0);
    let noise: Vec<f32> = (0..1000 * 784).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let f_noise = c.net.embed(&noise, 250).unwrap().features;
    let (real, far) = (
        fd(&f_train, &f_test).unwrap(),
        fd(&f_train, &f_noise).unwrap(),
    );
    println!("fd_lenet_mnist at n = 1000: train vs test {real:.3}, train vs noise {far:.3}");
    // At n = 1000 the floor is mostly the estimator's 1/n bias (about 1.3 at n = 10,000).
    assert!(far > 20.0 * real, "{real} vs {far}");
}

/// The training monitor on real MNIST images (healthy: no warning) and on one digit repeated
/// with a little noise (collapsed: classes disappear, samples are near-duplicates). Skipped,
/// saying so, without the shared files or the committed LeNet.
#[test]
fn monitor_flags_a_collapsed_generator() {
    use ganforge::metrics::monitor::{Monitor, MonitorConfig};
    let Some((train, test, clf)) = shared_mnist(3000, 300) else {
        return;
    };
    let cfg = MonitorConfig {
        n: 300,
        ..MonitorConfig::default()
    };
    let m = Monitor::new(clf, &train, cfg).unwrap();
    let healthy = m
        .check_samples(test.images.clone(), [1, 28, 28], None)
        .unwrap();
    assert!(healthy.warnings.is_empty(), "{:?}", healthy.warnings);
    let mut rng = Rng::new(0);
    let one = test.image(2).unwrap().to_vec(); // test image 2 is a 1
    let collapsed: Vec<f32> = (0..300)
        .flat_map(|_| {
            one.iter()
                .map(|v| v + 0.01 * rng.normal())
                .collect::<Vec<_>>()
        })
        .collect();
    let bad = m.check_samples(collapsed, [1, 28, 28], None).unwrap();
    println!("healthy: {:?}\ncollapsed: {:?}", healthy.values, bad.values);
    assert!(
        bad.warnings.iter().any(|w| w.contains("disappearing")),
        "{:?}",
        bad.warnings
    );
    assert!(
        bad.warnings.iter().any(|w| w.contains("near-duplicates")),
        "{:?}",
        bad.warnings
    );
    let fd = |r: &ganforge::metrics::monitor::MonitorReport| r.values[0].1;
    assert!(fd(&bad) > 10.0 * fd(&healthy));
}

/// `train --eval-every` logs the monitor's values at those steps, and measuring changes
/// nothing in the training: the same weights as a run without it, and a run resumed halfway
/// still ends bit-identical.
#[test]
fn train_eval_every_logs_and_leaves_training_untouched() {
    let dir = tmp("eval-every");
    let base = [
        "--data",
        "ring8",
        "--batch-size",
        "32",
        "--hidden",
        "16",
        "--checkpoint-every",
        "20",
    ];
    let run = |name: &str, steps: &str, extra: &[&str]| {
        let out = dir.join(name).display().to_string();
        let mut args = vec!["train", "--out", &out, "--steps", steps];
        args.extend_from_slice(&base);
        args.extend_from_slice(extra);
        ganforge(&args);
        dir.join(name)
    };
    let plain = run("plain", "40", &[]);
    let watched = run("watched", "40", &["--eval-every", "20"]);
    run("resumed", "20", &["--eval-every", "20"]);
    let resumed = run("resumed", "40", &["--eval-every", "20", "--resume"]);
    let weights = |d: &Path| {
        let c = load_checkpoint(&d.join("checkpoint.safetensors")).unwrap();
        c.tensors
            .iter()
            .filter(|(n, _)| n.starts_with("generator."))
            .map(|(n, t)| (n.clone(), t.to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(weights(&plain), weights(&watched));
    assert_eq!(weights(&watched), weights(&resumed));
    let rows = ganforge::io::read_metrics(&watched.join("metrics.jsonl")).unwrap();
    let logged: Vec<u64> = rows
        .iter()
        .filter(|(_, v)| v.contains_key("modes_covered_ring8"))
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(logged, vec![20, 40]);
    let rows = ganforge::io::read_metrics(&resumed.join("metrics.jsonl")).unwrap();
    assert_eq!(rows.len(), 40, "one line per step after the resume");
}
