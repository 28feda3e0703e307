//! Output files: sample grids, plots, safetensors checkpoints and the metrics log. Each file is
//! read back with an independent decoder (the `image` crate, the `safetensors` crate, plain
//! text) rather than with the code that wrote it.

use ganforge::io::checkpoint::{load_checkpoint, save_checkpoint};
use ganforge::io::image::{save_image, save_image_grid, save_image_grid_raw};
use ganforge::io::metrics::{read_metrics, truncate_metrics_after, MetricsLog};
use ganforge::io::plot::{plot_lines, plot_scatter, LINE_PLOT_SIZE, SCATTER_PLOT_SIZE};
use ganforge::io::tmp_path;
use ganforge::Tensor;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ganforge-io-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// The error message of a result that must be an error.
fn err_msg<T: std::fmt::Debug>(r: ganforge::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

// ---- image grids ----------------------------------------------------------------------------

/// Value of image `i`, channel `ch`, pixel `(y, x)` in the test pattern: spans [-1, 1].
fn pattern(i: usize, ch: usize, y: usize, x: usize) -> f32 {
    ((i * 7 + ch * 5 + y * 3 + x) % 11) as f32 / 5.0 - 1.0
}

fn expected_u8(v: f32) -> u8 {
    (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0 + 0.5).floor() as u8
}

#[test]
fn rgb_grid_has_the_layout_and_pixel_values_of_torchvision() {
    let (n, c, h, w, nrow) = (5, 3, 4, 3, 2);
    let mut data = vec![0f32; n * c * h * w];
    for i in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    data[((i * c + ch) * h + y) * w + x] = pattern(i, ch, y, x);
                }
            }
        }
    }
    let dir = temp_dir("grid-rgb");
    let path = dir.join("samples/step_000100.png"); // parent folder is created
    let t = Tensor::from_vec(data.clone(), [n, c, h, w]).unwrap();
    save_image_grid(&t, nrow, &path).unwrap();
    assert!(!tmp_path(&path).exists(), "temporary file left behind");

    let img = image::open(&path).unwrap();
    assert_eq!(img.color(), image::ColorType::Rgb8);
    let img = img.to_rgb8();
    // 2 columns, 3 rows of 3x4 tiles with 2 px padding: 2*(3+2)+2 by 3*(4+2)+2.
    assert_eq!(img.dimensions(), (12, 20));
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                let px = (2 + (i % nrow) * (w + 2) + x) as u32;
                let py = (2 + (i / nrow) * (h + 2) + y) as u32;
                let got = img.get_pixel(px, py).0;
                let want: Vec<u8> = (0..c).map(|ch| expected_u8(pattern(i, ch, y, x))).collect();
                assert_eq!(got.to_vec(), want, "image {i} pixel ({y}, {x})");
            }
        }
    }
    // Padding and the unused sixth slot are black.
    assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
    assert_eq!(img.get_pixel(11, 19).0, [0, 0, 0]);
    assert_eq!(img.get_pixel(5, 2).0, [0, 0, 0]); // column gap
    assert_eq!(img.get_pixel(2 + 5 + 1, 2 + 12 + 1).0, [0, 0, 0]); // empty slot

    // The same data through the raw entry point gives the same bytes.
    let raw_path = dir.join("raw.png");
    save_image_grid_raw(&data, n, c, h, w, nrow, &raw_path).unwrap();
    assert_eq!(image::open(&raw_path).unwrap().to_rgb8(), img);
}

#[test]
fn grey_grid_clamps_and_maps_values() {
    // One row of three 1x2 images: values outside [-1, 1] clamp, NaN is black.
    let data = [-1.0, 1.0, 0.0, 0.5, 7.0, f32::NAN];
    let dir = temp_dir("grid-grey");
    let path = dir.join("g.png");
    save_image_grid_raw(&data, 3, 1, 1, 2, 8, &path).unwrap();
    let img = image::open(&path).unwrap();
    assert_eq!(img.color(), image::ColorType::L8);
    let img = img.to_luma8();
    // nrow larger than n: one row of 3 tiles.
    assert_eq!(img.dimensions(), (3 * (2 + 2) + 2, 1 + 2 + 2));
    let row: Vec<u8> = (0..img.width()).map(|x| img.get_pixel(x, 2).0[0]).collect();
    assert_eq!(row, vec![0, 0, 0, 255, 0, 0, 128, 191, 0, 0, 255, 0, 0, 0]);
    assert!((0..img.width()).all(|x| img.get_pixel(x, 0).0[0] == 0));
}

#[test]
fn single_image_and_jpeg_output() {
    let dir = temp_dir("single");
    let t = Tensor::from_vec(vec![1.0; 3 * 5 * 7], [1, 3, 5, 7]).unwrap();
    let path = dir.join("seed0000.png");
    save_image(&t, &path).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (7, 5)); // no padding
    assert!(img.pixels().all(|p| p.0 == [255, 255, 255]));

    let jpg = dir.join("grid.jpg");
    save_image_grid(&t, 4, &jpg).unwrap();
    let bytes = fs::read(&jpg).unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "a .jpg path gets a JPEG file");
    assert_eq!(image::open(&jpg).unwrap().width(), 7 + 4);
}

#[test]
fn bad_grid_inputs_are_errors() {
    let dir = temp_dir("grid-bad");
    let p = dir.join("x.png");
    let t3 = Tensor::from_vec(vec![0.0; 12], [3, 2, 2]).unwrap();
    assert!(err_msg(save_image_grid(&t3, 2, &p)).contains("[N, C, H, W]"));
    let two_ch = Tensor::from_vec(vec![0.0; 8], [1, 2, 2, 2]).unwrap();
    assert!(err_msg(save_image_grid(&two_ch, 2, &p)).contains("1 or 3 channels"));
    assert!(err_msg(save_image_grid_raw(&[0.0; 4], 1, 1, 2, 2, 0, &p)).contains("nrow"));
    assert!(err_msg(save_image_grid_raw(&[0.0; 3], 1, 1, 2, 2, 1, &p)).contains("need 4"));
    assert!(err_msg(save_image_grid_raw(&[], 0, 1, 2, 2, 1, &p)).contains("nothing to draw"));
    assert!(!p.exists());
}

// ---- checkpoints ----------------------------------------------------------------------------

fn sample_tensors() -> Vec<(String, Tensor)> {
    vec![
        (
            "generator.main.0.weight".into(),
            Tensor::from_vec(
                (0..24).map(|i| i as f32 * 0.5 - 3.0).collect(),
                [2, 3, 2, 2],
            )
            .unwrap(),
        ),
        (
            "generator.main.1.running_mean".into(),
            Tensor::from_vec(vec![f32::MIN_POSITIVE, -0.0, 1e30], [3]).unwrap(),
        ),
        (
            "discriminator.fc.bias".into(),
            Tensor::from_vec(vec![0.25], [1]).unwrap(),
        ),
        ("step_scalar".into(), Tensor::scalar(42.0)),
    ]
}

fn sample_meta() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("step".to_string(), "1200".to_string()),
        ("model".to_string(), "dcgan".to_string()),
        (
            "config".to_string(),
            r#"{"lr": 0.0002, "z": 100}"#.to_string(),
        ),
    ])
}

#[test]
fn checkpoint_round_trips_names_shapes_data_and_metadata() {
    let dir = temp_dir("ckpt-rt");
    let path = dir.join("ckpt/latest.safetensors");
    let tensors = sample_tensors();
    save_checkpoint(&path, &tensors, &sample_meta()).unwrap();
    assert!(!tmp_path(&path).exists(), "temporary file left behind");

    let ck = load_checkpoint(&path).unwrap();
    assert_eq!(ck.metadata, sample_meta());
    assert_eq!(ck.tensors.len(), tensors.len());
    for (name, t) in &tensors {
        let got = ck.get(name).unwrap();
        assert_eq!(got.dims(), t.dims(), "{name}");
        let (a, b) = (got.to_vec(), t.to_vec());
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name}: {a:?} vs {b:?}"
        );
    }
    let g = ck.with_prefix("generator");
    let mut keys: Vec<_> = g.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["main.0.weight", "main.1.running_mean"]);
    assert_eq!(ck.with_prefix("discriminator.").len(), 1);
    assert_eq!(
        ck.with_prefix("gen").len(),
        0,
        "prefix matches whole name parts only"
    );
    assert_eq!(ck.with_prefix("").len(), 4);

    let msg = err_msg(ck.get("generator.main.9.weight"));
    assert!(msg.contains("generator.main.9.weight"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn checkpoint_is_plain_safetensors() {
    let dir = temp_dir("ckpt-plain");
    let path = dir.join("c.safetensors");
    save_checkpoint(&path, &sample_tensors(), &sample_meta()).unwrap();
    let bytes = fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor("generator.main.0.weight").unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    assert_eq!(view.shape(), &[2, 3, 2, 2]);
    assert_eq!(&view.data()[..4], &(-3.0f32).to_le_bytes());
    assert_eq!(&view.data()[4..8], &(-2.5f32).to_le_bytes());
    assert_eq!(st.tensor("step_scalar").unwrap().shape(), &[] as &[usize]);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta.get("step").map(String::as_str), Some("1200"));
    assert_eq!(meta.len(), 3);
}

#[test]
fn reads_a_checkpoint_written_by_pytorch() {
    // Written by `safetensors.torch.save_file` (see tests/pytorch_parity.rs for its source).
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/batch_norm_train.safetensors");
    let ck = load_checkpoint(&path).unwrap();
    assert_eq!(ck.tensors.len(), 24);
    assert!(ck.metadata.is_empty());
    let x = ck.get("bn2d.x").unwrap();
    assert_eq!(x.dims(), &[3, 5, 7, 9]);
    let bytes = fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let raw = st.tensor("bn2d.x").unwrap();
    let want: Vec<f32> = raw
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(x.to_vec(), want);
    let bn1d = ck.with_prefix("bn1d");
    assert_eq!(bn1d.len(), 12);
    assert_eq!(bn1d["running_mean"].dims(), &[5]);
    assert_eq!(bn1d["grad.x"].dims(), &[6, 5]);
}

#[test]
fn a_failed_write_leaves_the_previous_checkpoint_intact() {
    let dir = temp_dir("ckpt-atomic");
    let path = dir.join("latest.safetensors");
    save_checkpoint(&path, &sample_tensors(), &sample_meta()).unwrap();
    let good = fs::read(&path).unwrap();

    // The next save cannot create its temporary file (a folder is in the way).
    fs::create_dir(tmp_path(&path)).unwrap();
    let other = vec![("x".to_string(), Tensor::scalar(1.0))];
    let msg = err_msg(save_checkpoint(&path, &other, &BTreeMap::new()));
    assert!(msg.contains("latest.safetensors.tmp"), "{msg}");
    assert_eq!(
        fs::read(&path).unwrap(),
        good,
        "previous checkpoint changed"
    );
    assert!(load_checkpoint(&path).is_ok());
    fs::remove_dir(tmp_path(&path)).unwrap();

    // A save refused before writing (duplicate names) leaves it alone too, and no temp file.
    let dup = vec![
        ("a".to_string(), Tensor::scalar(1.0)),
        ("a".to_string(), Tensor::scalar(2.0)),
    ];
    assert!(err_msg(save_checkpoint(&path, &dup, &BTreeMap::new())).contains("twice"));
    assert_eq!(fs::read(&path).unwrap(), good);
    assert!(!tmp_path(&path).exists());

    // A later good save replaces it whole.
    save_checkpoint(&path, &other, &BTreeMap::new()).unwrap();
    assert_eq!(load_checkpoint(&path).unwrap().tensors.len(), 1);
    assert!(!tmp_path(&path).exists());
}

#[test]
fn missing_truncated_corrupt_and_non_f32_files_are_errors_naming_the_file() {
    let dir = temp_dir("ckpt-bad");
    let good = dir.join("good.safetensors");
    save_checkpoint(&good, &sample_tensors(), &sample_meta()).unwrap();
    let bytes = fs::read(&good).unwrap();

    let check = |name: &str, contents: Option<&[u8]>, needle: &str| {
        let p = dir.join(name);
        if let Some(c) = contents {
            fs::write(&p, c).unwrap();
        }
        let msg = err_msg(load_checkpoint(&p));
        assert!(msg.contains(&p.display().to_string()), "{name}: {msg}");
        assert!(msg.contains(needle), "{name}: {msg}");
    };
    check("missing.safetensors", None, "No such file");
    check("empty.safetensors", Some(&[]), "truncated or corrupt");
    check(
        "truncated.safetensors",
        Some(&bytes[..bytes.len() - 5]),
        "truncated",
    );
    check("header-cut.safetensors", Some(&bytes[..20]), "truncated");
    check(
        "garbage.safetensors",
        Some(b"this is not a checkpoint at all"),
        "corrupt",
    );
    let mut flipped = bytes.clone();
    flipped[8] = b'['; // JSON header no longer an object
    check("flipped.safetensors", Some(&flipped), "corrupt");

    // A half-precision tensor, as PyTorch would save it without `.float()`.
    let half = [0u8; 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2], &half).unwrap();
    let f16_bytes = safetensors::serialize([("w", view)], None).unwrap();
    check("half.safetensors", Some(&f16_bytes), "F16");
}

// ---- metrics log ----------------------------------------------------------------------------

#[test]
fn metrics_log_appends_reads_back_and_formats_json_lines() {
    let dir = temp_dir("metrics");
    let path = dir.join("run/metrics.jsonl");
    {
        let mut log = MetricsLog::open(&path, false).unwrap();
        log.log(0, &[("epoch", 0.0), ("loss_d", 1.5), ("loss_g", 0.75)])
            .unwrap();
        log.log(
            10,
            &[("epoch", 1.0), ("loss_d", f64::NAN), ("loss_g", 1e-7)],
        )
        .unwrap();
    }
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        r#"{"step":0,"epoch":0,"loss_d":1.5,"loss_g":0.75}"#
    );
    assert!(lines[1].starts_with(r#"{"step":10,"epoch":1,"loss_d":null,"loss_g":"#));
    // Every line is standalone JSON.
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l).unwrap();
    }

    {
        let mut log = MetricsLog::open(&path, true).unwrap();
        log.log(20, &[("loss_d", -2.0)]).unwrap();
        let msg = err_msg(log.log(30, &[("step", 1.0)]));
        assert!(msg.contains("step"), "{msg}");
    }
    let m = read_metrics(&path).unwrap();
    assert_eq!(m.iter().map(|e| e.0).collect::<Vec<_>>(), vec![0, 10, 20]);
    assert_eq!(m[0].1["loss_g"], 0.75);
    assert!(m[1].1["loss_d"].is_nan());
    assert_eq!(m[1].1["loss_g"], 1e-7);
    assert_eq!(m[2].1.len(), 1);

    // append = false starts over.
    MetricsLog::open(&path, false).unwrap();
    assert!(read_metrics(&path).unwrap().is_empty());
}

#[test]
fn torn_last_line_is_skipped_and_cut_before_appending() {
    let dir = temp_dir("metrics-torn");
    let path = dir.join("metrics.jsonl");
    fs::write(
        &path,
        "{\"step\":1,\"loss_d\":0.5}\n{\"step\":2,\"loss_d\":0.4}\n{\"step\":3,\"lo",
    )
    .unwrap();
    let m = read_metrics(&path).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].1["loss_d"], 0.4);

    let mut log = MetricsLog::open(&path, true).unwrap();
    log.log(3, &[("loss_d", 0.3)]).unwrap();
    drop(log);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert_eq!(read_metrics(&path).unwrap()[2].0, 3);

    // A complete record that only lacks its newline is kept, not cut.
    fs::write(&path, "{\"step\":1,\"a\":1}").unwrap();
    MetricsLog::open(&path, true)
        .unwrap()
        .log(2, &[("a", 2.0)])
        .unwrap();
    assert_eq!(read_metrics(&path).unwrap().len(), 2);

    // A bad line in the middle is an error naming the file and the line.
    fs::write(&path, "{\"step\":1}\nnot json\n{\"step\":3}\n").unwrap();
    let msg = err_msg(read_metrics(&path));
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("line 2"),
        "{msg}"
    );
}

#[test]
fn truncate_after_drops_later_steps_for_a_resumed_run() {
    let dir = temp_dir("metrics-trunc");
    let path = dir.join("metrics.jsonl");
    let mut log = MetricsLog::open(&path, false).unwrap();
    for s in (0..=50).step_by(10) {
        log.log(s, &[("loss_d", s as f64)]).unwrap();
    }
    drop(log);
    truncate_metrics_after(&path, 30).unwrap();
    let steps: Vec<u64> = read_metrics(&path).unwrap().iter().map(|e| e.0).collect();
    assert_eq!(steps, vec![0, 10, 20, 30]);
    truncate_metrics_after(&path, 30).unwrap(); // idempotent

    // Resuming appends after the kept lines, without duplicates.
    let mut log = MetricsLog::resume(&path, 20).unwrap();
    log.log(30, &[("loss_d", 99.0)]).unwrap();
    drop(log);
    let m = read_metrics(&path).unwrap();
    assert_eq!(
        m.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![0, 10, 20, 30]
    );
    assert_eq!(m[3].1["loss_d"], 99.0);

    // Out-of-order lines (an older resume that did not truncate) are rewritten, order kept.
    fs::write(
        &path,
        "{\"step\":0}\n{\"step\":40}\n{\"step\":10}\n{\"step\":50}\n{\"step\":20}\n{\"step\":3",
    )
    .unwrap();
    truncate_metrics_after(&path, 20).unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "{\"step\":0}\n{\"step\":10}\n{\"step\":20}\n"
    );
    assert!(!tmp_path(&path).exists());

    // A missing log is nothing to truncate.
    truncate_metrics_after(&dir.join("none.jsonl"), 5).unwrap();
}

// ---- plots ----------------------------------------------------------------------------------

/// Counts pixels within `tol` of `rgb` (per channel).
fn count_near(img: &image::RgbImage, rgb: [u8; 3], tol: u8) -> usize {
    img.pixels()
        .filter(|p| (0..3).all(|c| p.0[c].abs_diff(rgb[c]) <= tol))
        .count()
}

/// Dark (text-like) pixels in the rectangle `[x0, x1) x [y0, y1)`.
fn dark_in(img: &image::RgbImage, x0: u32, x1: u32, y0: u32, y1: u32) -> usize {
    let mut n = 0;
    for y in y0..y1 {
        for x in x0..x1 {
            if img.get_pixel(x, y).0.iter().all(|&c| c < 100) {
                n += 1;
            }
        }
    }
    n
}

fn open_png(path: &Path) -> image::RgbImage {
    let bytes = fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8()
}

fn noisy_loss(n: usize, base: f64, seed: u64) -> Vec<(f64, f64)> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((s >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.6;
            (i as f64 * 10.0, base + (-(i as f64) / 150.0).exp() + noise)
        })
        .collect()
}

#[test]
fn loss_plot_is_a_png_with_curves_text_and_legend() {
    let dir = temp_dir("plot-lines");
    let path = dir.join("loss.png");
    let mut g = noisy_loss(600, 0.7, 1);
    g[300].1 = f64::NAN; // a diverged step must not break the plot
    let series = vec![
        ("loss_d".to_string(), noisy_loss(600, 0.4, 2)),
        ("loss_g".to_string(), g),
    ];
    plot_lines(&path, "DCGAN on MNIST: losses", "step", "loss", &series, 25).unwrap();
    let img = open_png(&path);
    assert_eq!(img.dimensions(), LINE_PLOT_SIZE);
    let (w, h) = img.dimensions();
    // Solid curves in the first two palette colours.
    assert!(
        count_near(&img, [31, 119, 180], 12) > 500,
        "no loss_d curve"
    );
    assert!(
        count_near(&img, [255, 127, 14], 12) > 500,
        "no loss_g curve"
    );
    // Title text at the top centre, tick labels under the x axis and left of the y axis.
    assert!(dark_in(&img, w / 3, 2 * w / 3, 0, 45) > 100, "no title");
    assert!(
        dark_in(&img, 100, w, h - 60, h) > 100,
        "no x ticks or label"
    );
    assert!(
        dark_in(&img, 0, 90, 60, h - 60) > 100,
        "no y ticks or label"
    );
    assert!(!tmp_path(&path).exists());

    // Unsmoothed, empty and all-NaN inputs still give a picture.
    let raw = dir.join("raw.png");
    plot_lines(&raw, "raw", "step", "loss", &series, 0).unwrap();
    assert_eq!(open_png(&raw).dimensions(), LINE_PLOT_SIZE);
    plot_lines(&dir.join("empty.png"), "empty", "x", "y", &[], 10).unwrap();
    let nan = vec![("nan".to_string(), vec![(0.0, f64::NAN), (1.0, f64::NAN)])];
    plot_lines(&dir.join("nan.png"), "nan", "x", "y", &nan, 10).unwrap();
    let flat = vec![("flat".to_string(), vec![(5.0, 1.0)])];
    plot_lines(&dir.join("one.png"), "one point", "x", "y", &flat, 10).unwrap();
    assert_eq!(open_png(&dir.join("one.png")).dimensions(), LINE_PLOT_SIZE);
}

#[test]
fn scatter_plot_shows_real_generated_and_centres() {
    let dir = temp_dir("plot-scatter");
    let path = dir.join("scatter.png");
    let centres: Vec<[f32; 2]> = (0..8)
        .map(|k| {
            let a = k as f32 * std::f32::consts::TAU / 8.0;
            [2.0 * a.cos(), 2.0 * a.sin()]
        })
        .collect();
    let mut s = 7u64;
    let mut rnd = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.25
    };
    let real: Vec<[f32; 2]> = (0..800)
        .map(|i| {
            let c = centres[i % 8];
            [c[0] + rnd(), c[1] + rnd()]
        })
        .collect();
    let mut generated: Vec<[f32; 2]> = (0..800)
        .map(|i| {
            let c = centres[(i % 3) * 2]; // mode collapse onto 3 of 8 modes
            [c[0] + 1.5 * rnd(), c[1] + 1.5 * rnd()]
        })
        .collect();
    generated.push([f32::NAN, 0.0]);
    plot_scatter(&path, "8 Gaussians, step 2000", &real, &generated, &centres).unwrap();
    let img = open_png(&path);
    assert_eq!(img.dimensions(), SCATTER_PLOT_SIZE);
    let (w, _) = img.dimensions();
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(non_white > 5000, "{non_white}");
    // Blue-ish and orange-ish dots (blended with white by their alpha).
    let bluish = img
        .pixels()
        .filter(|p| p.0[2] as i32 > p.0[0] as i32 + 40 && p.0[2] > 150)
        .count();
    let orangish = img
        .pixels()
        .filter(|p| p.0[0] as i32 > p.0[2] as i32 + 60 && p.0[0] > 200)
        .count();
    assert!(bluish > 1000 && orangish > 1000, "{bluish} {orangish}");
    assert!(count_near(&img, [0, 0, 0], 30) > 100, "no crosses or text");
    assert!(dark_in(&img, w / 4, 3 * w / 4, 0, 40) > 80, "no title");

    // Only real points, no centres.
    let real_only = dir.join("real_only.png");
    plot_scatter(&real_only, "real only", &real, &[], &[]).unwrap();
    assert_eq!(open_png(&real_only).dimensions(), SCATTER_PLOT_SIZE);
}
