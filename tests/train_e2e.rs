//! End to end: the `ganforge` binary's `train` and `sample` on tiny data, every artefact of a
//! run folder, bit-identical resume, and the errors users meet (corrupt data, corrupt
//! checkpoint, diverged training, models that do not fit the data).

use ganforge::gan::trainer::{SavedRun, TrainConfig, CHECKPOINT_FILE};
use ganforge::io::{load_checkpoint, read_metrics};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ganforge");

/// A fresh temporary folder for one test.
fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ganforge-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run ganforge")
}

/// Runs the binary and insists that it succeeds; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "ganforge {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the binary and insists that it fails; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "ganforge {args:?} should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Tiny models on tiny data: a few steps take milliseconds.
const TINY: &[&str] = &[
    "--digits-count",
    "40",
    "--batch-size",
    "8",
    "--ngf",
    "4",
    "--ndf",
    "4",
    "--latent-dim",
    "8",
    "--hidden",
    "16",
];

fn train_args<'a>(extra: &[&'a str], out: &'a str) -> Vec<&'a str> {
    let mut v = vec!["train", "--out", out];
    v.extend_from_slice(TINY);
    v.extend_from_slice(extra);
    v
}

fn decode_png(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

#[test]
fn every_model_trains_and_writes_every_artefact() {
    let dir = tmp("models");
    let cases: &[(&str, &str)] = &[
        ("vanilla", "ring8"),
        ("vanilla", "digits"),
        ("dcgan", "digits"),
        ("cgan", "digits"),
        ("wgan", "digits"),
        ("wgan-gp", "digits"),
        ("lsgan", "digits"),
        ("sngan", "grid25"),
        ("sngan", "digits"),
    ];
    for &(model, data) in cases {
        let out = dir.join(format!("{model}-{data}"));
        let out_s = out.to_str().unwrap();
        let extra = [
            "--model",
            model,
            "--data",
            data,
            "--steps",
            "3",
            "--sample-every",
            "2",
            "--checkpoint-every",
            "2",
            "--ema-decay",
            "0.5",
        ];
        let stdout = ok(&train_args(&extra, out_s));
        assert!(
            stdout.contains("done: steps 0->3"),
            "{model} on {data}: {stdout}"
        );

        // The resolved config reads back and says what was asked.
        let cfg_text = std::fs::read_to_string(out.join("config.toml")).unwrap();
        let cfg = TrainConfig::from_toml(&cfg_text).unwrap();
        assert_eq!(cfg.gan.model.name(), model);
        assert_eq!(cfg.data, data);
        assert_eq!((cfg.steps, cfg.batch_size, cfg.gan.ngf), (Some(3), 8, 4));

        // One metrics line per step, each with the losses.
        let rows = read_metrics(&out.join("metrics.jsonl")).unwrap();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(rows
            .iter()
            .all(|(_, v)| v["loss_d"].is_finite() && v["epoch"] >= 1.0));

        // Samples at the sample steps and the end, the loss plot; all decode.
        let samples = out.join("samples");
        let prefix = if data == "digits" {
            "step"
        } else {
            "scatter_step"
        };
        for f in [
            format!("{prefix}_000002.png"),
            format!("{prefix}_000003.png"),
            "latest.png".to_string(),
        ] {
            let (w, h) = decode_png(&samples.join(&f));
            assert!(w > 10 && h > 10, "{model}/{data}: {f} is {w}x{h}");
        }
        if data == "digits" {
            // 8 columns of 28 px + 2 px padding; conditional: one row per class.
            let rows = if model == "cgan" { 10 } else { 8 };
            assert_eq!(
                decode_png(&samples.join("latest.png")),
                (8 * 30 + 2, rows * 30 + 2),
                "{model}"
            );
        }
        decode_png(&out.join("loss.png"));

        // The checkpoint describes itself and holds every part of the state.
        let run = SavedRun::open(&out.join(CHECKPOINT_FILE)).unwrap();
        assert_eq!(run.step, 3);
        assert!(run.has_ema());
        let ckpt = load_checkpoint(&out.join(CHECKPOINT_FILE)).unwrap();
        for prefix in [
            "generator.",
            "discriminator.",
            "generator_ema.",
            "optimizer_d.",
        ] {
            assert!(
                ckpt.tensors.iter().any(|(n, _)| n.starts_with(prefix)),
                "{model}/{data}: no {prefix}* in the checkpoint"
            );
        }
        for key in ["config", "data_shape", "rng", "step", "epoch"] {
            assert!(
                ckpt.meta(key).is_some(),
                "{model}/{data}: no {key} metadata"
            );
        }
        assert!(!out.join("checkpoint.safetensors.tmp").exists());
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Every tensor and every metadata value of two checkpoints, bit for bit.
fn assert_same_checkpoints(a: &Path, b: &Path, what: &str) {
    let (a, b) = (load_checkpoint(a).unwrap(), load_checkpoint(b).unwrap());
    assert_eq!(a.metadata, b.metadata, "{what}: metadata");
    let names =
        |c: &ganforge::io::Checkpoint| c.tensors.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "{what}: tensor names");
    for ((name, x), (_, y)) in a.tensors.iter().zip(&b.tensors) {
        let bits =
            |t: &ganforge::Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(x) == bits(y),
            "{what}: tensor {name} differs after resume"
        );
    }
}

#[test]
fn resume_equals_an_uninterrupted_run() {
    let dir = tmp("resume");
    // digits with 40 images in batches of 8: 5 batches per epoch, so 6 steps cross an epoch
    // boundary after the resume point. wgan-gp draws extra noise (penalty, fresh z); ring8
    // draws its data from a random stream; EMA and batch norm carry state.
    let cases: &[&[&str]] = &[
        &[
            "--model",
            "dcgan",
            "--ema-decay",
            "0.9",
            "--label-smoothing",
            "0.1",
        ],
        &["--model", "wgan-gp", "--n-critic", "2"],
        &["--model", "cgan"],
        &["--model", "vanilla", "--data", "ring8"],
    ];
    for (i, case) in cases.iter().enumerate() {
        let straight = dir.join(format!("{i}-straight"));
        let split = dir.join(format!("{i}-split"));
        let mut common = vec!["--sample-every", "2", "--checkpoint-every", "100"];
        common.extend_from_slice(case);
        let train = |extra: &[&str], out: &Path| {
            let mut v = train_args(&common, out.to_str().unwrap());
            v.extend_from_slice(extra);
            ok(&v)
        };
        train(&["--steps", "6"], &straight);
        train(&["--steps", "3"], &split);
        assert_eq!(
            SavedRun::open(&split.join(CHECKPOINT_FILE)).unwrap().step,
            3
        );
        // The resumed run needs only the folder and the new length.
        let stdout = ok(&[
            "train",
            "--out",
            split.to_str().unwrap(),
            "--resume",
            "--steps",
            "6",
        ]);
        assert!(stdout.contains("resuming: steps 3->6"), "{stdout}");

        assert_same_checkpoints(
            &straight.join(CHECKPOINT_FILE),
            &split.join(CHECKPOINT_FILE),
            &format!("{case:?}"),
        );
        let (a, b) = (
            read_metrics(&straight.join("metrics.jsonl")).unwrap(),
            read_metrics(&split.join("metrics.jsonl")).unwrap(),
        );
        assert_eq!(a.len(), 6);
        for ((sa, va), (sb, vb)) in a.iter().zip(&b) {
            assert_eq!(sa, sb);
            assert_eq!(va.keys().collect::<Vec<_>>(), vb.keys().collect::<Vec<_>>());
            for (k, x) in va {
                assert_eq!(x.to_bits(), vb[k].to_bits(), "{case:?}: step {sa} {k}");
            }
        }
        // Resuming at the target does nothing and says so.
        let stdout = ok(&["train", "--out", split.to_str().unwrap(), "--resume"]);
        assert!(stdout.contains("nothing to do"), "{stdout}");
    }

    // A resumed run refuses settings the checkpoint fixes, and a fresh run refuses the folder.
    let out = dir.join("0-split");
    let out_s = out.to_str().unwrap();
    let e = fails(&[
        "train", "--out", out_s, "--resume", "--steps", "9", "--ngf", "8",
    ]);
    assert!(e.contains("gan.ngf") && e.contains("4 -> 8"), "{e}");
    let e = fails(&train_args(&["--steps", "2"], out_s));
    assert!(
        e.contains("already holds a run") && e.contains("--resume"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--out",
        dir.join("none").to_str().unwrap(),
        "--resume",
    ]);
    assert!(
        e.contains("no ") && e.contains("checkpoint.safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn corrupt_data_and_corrupt_checkpoints_are_clear_errors_naming_the_file() {
    let dir = tmp("corrupt");
    // MNIST files with garbage in them.
    let data = dir.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    let images = data.join("train-images-idx3-ubyte");
    std::fs::write(&images, b"this is not an IDX file at all, just text").unwrap();
    std::fs::write(
        data.join("train-labels-idx1-ubyte"),
        [0u8, 0, 8, 1, 0, 0, 0, 2, 1, 2],
    )
    .unwrap();
    let spec = format!("mnist:{}", data.display());
    let out = dir.join("run");
    let e = fails(&[
        "train",
        "--data",
        &spec,
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert!(e.contains(images.to_str().unwrap()), "{e}");
    assert!(e.contains("bad IDX magic"), "{e}");
    assert!(!out.join(CHECKPOINT_FILE).exists());

    // A real checkpoint, then truncated.
    let out = dir.join("ok");
    ok(&train_args(&["--steps", "1"], out.to_str().unwrap()));
    let ckpt = out.join(CHECKPOINT_FILE);
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let ckpt_s = ckpt.to_str().unwrap();
    let png = dir.join("s.png");
    let e = fails(&[
        "sample",
        "--checkpoint",
        ckpt_s,
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(
        e.contains(ckpt_s) && e.contains("truncated or corrupt"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--out",
        out.to_str().unwrap(),
        "--resume",
        "--steps",
        "2",
    ]);
    assert!(e.contains(ckpt_s), "{e}");
    // Missing, and a safetensors file that is not a ganforge checkpoint.
    let missing = dir.join("nope.safetensors");
    let e = fails(&["sample", "--checkpoint", missing.to_str().unwrap()]);
    assert!(
        e.contains(missing.to_str().unwrap()) && e.contains("no such"),
        "{e}"
    );
    let foreign = dir.join("foreign.safetensors");
    let w = ganforge::Tensor::from_vec(vec![1.0], [1]).unwrap();
    ganforge::io::save_checkpoint(&foreign, &[("w".into(), w)], &Default::default()).unwrap();
    let e = fails(&["sample", "--checkpoint", foreign.to_str().unwrap()]);
    assert!(
        e.contains(foreign.to_str().unwrap()) && e.contains("not a ganforge"),
        "{e}"
    );
    assert!(!png.exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tmp("nan");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let base = [
        "--model",
        "vanilla",
        "--data",
        "ring8",
        "--checkpoint-every",
        "1",
    ];
    ok(&train_args(&[&base[..], &["--steps", "2"]].concat(), out_s));
    // Continue with absurd learning rates: the first update blows the weights up.
    let e = fails(&[
        "train", "--out", out_s, "--resume", "--steps", "50", "--lr-d", "1e30", "--lr-g", "1e30",
    ]);
    assert!(e.contains("non-finite loss, training stopped"), "{e}");
    assert!(e.contains("at step 3") || e.contains("at step 4"), "{e}");
    assert!(e.contains("loss_d") || e.contains("loss_g"), "{e}");
    assert!(
        e.contains("is untouched") && e.contains("lower the learning rates"),
        "{e}"
    );
    // The checkpoint is the one of the step before, and it still loads; the metrics stop there.
    let run = SavedRun::open(&out.join(CHECKPOINT_FILE)).unwrap();
    assert!(e.contains(&format!("(step {})", run.step)), "{e}");
    assert!(e.contains(&format!("at step {}", run.step + 1)), "{e}");
    let rows = read_metrics(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(rows.len() as u64, run.step);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sample_writes_grids_seeds_walks_and_scatters_reproducibly() {
    let dir = tmp("sample");
    let out = dir.join("cgan");
    ok(&train_args(
        &["--model", "cgan", "--steps", "2", "--ema-decay", "0.5"],
        out.to_str().unwrap(),
    ));
    let ckpt = out.join(CHECKPOINT_FILE);
    let ckpt_s = ckpt.to_str().unwrap();
    let grid = dir.join("grid.png");
    let grid_s = grid.to_str().unwrap();

    // Default: one row per class.
    let stdout = ok(&[
        "sample",
        "--checkpoint",
        ckpt_s,
        "--n",
        "20",
        "--out",
        grid_s,
    ]);
    assert!(stdout.contains("EMA"), "{stdout}");
    assert_eq!(decode_png(&grid), (2 * 30 + 2, 10 * 30 + 2));
    ok(&[
        "sample",
        "--checkpoint",
        ckpt_s,
        "--n",
        "9",
        "--class",
        "3",
        "--no-ema",
        "--out",
        grid_s,
    ]);
    assert_eq!(decode_png(&grid), (3 * 30 + 2, 3 * 30 + 2));
    let e = fails(&[
        "sample",
        "--checkpoint",
        ckpt_s,
        "--class",
        "10",
        "--out",
        grid_s,
    ]);
    assert!(e.contains("--class 10") && e.contains("0..=9"), "{e}");

    // --seeds: one PNG per seed, the same bytes every time, different across seeds.
    let seeds = |tag: &str| -> Vec<Vec<u8>> {
        let base = dir.join(format!("{tag}.png"));
        ok(&[
            "sample",
            "--checkpoint",
            ckpt_s,
            "--seeds",
            "1,2,3",
            "--out",
            base.to_str().unwrap(),
        ]);
        (1..=3)
            .map(|s| {
                let p = dir.join(format!("{tag}_seed{s}.png"));
                assert_eq!(decode_png(&p), (28, 28), "one image per seed");
                std::fs::read(p).unwrap()
            })
            .collect()
    };
    let (a, b) = (seeds("a"), seeds("b"));
    assert_eq!(a, b, "--seeds is reproducible");
    assert_ne!(a[0], a[1]);

    // A latent walk: 2 rows of 5.
    let walk = dir.join("walk.png");
    ok(&[
        "sample",
        "--checkpoint",
        ckpt_s,
        "--interpolate",
        "--n",
        "10",
        "--walk-steps",
        "5",
        "--out",
        walk.to_str().unwrap(),
    ]);
    assert_eq!(decode_png(&walk), (5 * 30 + 2, 2 * 30 + 2));

    // 2-D models: a scatter plot and the mode coverage.
    let out = dir.join("ring");
    ok(&train_args(
        &["--data", "ring8", "--steps", "2"],
        out.to_str().unwrap(),
    ));
    let sc = dir.join("scatter.png");
    let stdout = ok(&[
        "sample",
        "--checkpoint",
        out.join(CHECKPOINT_FILE).to_str().unwrap(),
        "--out",
        sc.to_str().unwrap(),
    ]);
    assert!(stdout.contains("modes covered"), "{stdout}");
    decode_png(&sc);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_files_flags_devices_and_mismatches() {
    let dir = tmp("config");
    let file = dir.join("my.toml");
    std::fs::write(
        &file,
        "steps = 2\nbatch_size = 4\nseed = 5\n[gan]\nmodel = \"lsgan\"\nlr_d = 1e-3\nngf = 6\n",
    )
    .unwrap();
    let out = dir.join("run");
    // Flags override the file; the file overrides the model's defaults.
    let stdout = ok(&[
        "train",
        "--config",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--digits-count",
        "16",
        "--ndf",
        "4",
        "--latent-dim",
        "8",
        "--seed",
        "9",
        "--device",
        "auto",
    ]);
    // auto says what it chose; without a hardware GPU (CI: none, or only lavapipe) it is the
    // CPU.
    assert!(stdout.contains("device: "), "{stdout}");
    let cfg =
        TrainConfig::from_toml(&std::fs::read_to_string(out.join("config.toml")).unwrap()).unwrap();
    assert_eq!(cfg.gan.model.name(), "lsgan");
    assert_eq!((cfg.steps, cfg.batch_size, cfg.seed), (Some(2), 4, 9));
    assert_eq!(
        (cfg.gan.lr_d, cfg.gan.lr_g, cfg.gan.ngf, cfg.gan.ndf),
        (1e-3, 2e-4, 6, 4)
    );
    // The written config trains the same run again.
    let again = dir.join("again");
    ok(&[
        "train",
        "--config",
        out.join("config.toml").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(again.join("metrics.jsonl")).unwrap(),
        std::fs::read(out.join("metrics.jsonl")).unwrap()
    );

    let o = dir.join("x");
    let o = o.to_str().unwrap();
    std::fs::write(&file, "[gan]\nlearning_rate = 1\n").unwrap();
    let e = fails(&["train", "--config", file.to_str().unwrap(), "--out", o]);
    assert!(
        e.contains("my.toml") && e.contains("gan.learning_rate"),
        "{e}"
    );
    // --device gpu trains on any adapter (lavapipe in CI), or says why there is none.
    match ganforge::Device::gpu() {
        Ok(_) => {
            let gpu_out = dir.join("gpu");
            let stdout = ok(&train_args(
                &["--device", "gpu", "--steps", "1"],
                gpu_out.to_str().unwrap(),
            ));
            assert!(stdout.contains("device: gpu"), "{stdout}");
        }
        Err(_) => {
            let e = fails(&train_args(&["--device", "gpu"], o));
            assert!(e.contains("no usable GPU adapter"), "{e}");
        }
    }
    // Models that do not fit the data are refused before any training, saying what to change.
    let e = fails(&train_args(&["--image-size", "40", "--steps", "1"], o));
    assert!(e.contains("40x40") && e.contains("--image-size"), "{e}");
    let e = fails(&train_args(
        &["--data", "ring8", "--conditional", "--steps", "1"],
        o,
    ));
    assert!(e.contains("label"), "{e}");
    let e = fails(&train_args(&["--data", "imagenet:/x"], o));
    assert!(
        e.contains("unknown data spec") && e.contains("mnist:DIR"),
        "{e}"
    );
    assert!(!Path::new(o).join(CHECKPOINT_FILE).exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn trains_on_the_shared_mnist_files_when_present() {
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    if !mnist.join("train-images-idx3-ubyte.gz").is_file() {
        eprintln!("skipped: {} is absent", mnist.display());
        return;
    }
    let dir = tmp("mnist");
    let out = dir.join("run");
    let spec = format!("mnist:{}", mnist.display());
    let stdout = ok(&train_args(
        &[
            "--data",
            &spec,
            "--max-images",
            "64",
            "--steps",
            "2",
            "--model",
            "cgan",
        ],
        out.to_str().unwrap(),
    ));
    assert!(stdout.contains("mnist train (64 images"), "{stdout}");
    assert_eq!(
        decode_png(&out.join("samples/latest.png")),
        (8 * 30 + 2, 10 * 30 + 2)
    );
    std::fs::remove_dir_all(&dir).ok();
}
