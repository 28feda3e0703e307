//! The data layer: real files from `../shared/data` (skipped, saying why, when absent), corrupt
//! inputs written to temporary files, the built-in digits and the batcher.

use ganforge::data::{
    cifar, digits, folder, idx, Batcher, ColorMode, Data, DataSpec, Dataset, LoadOptions, Split,
};
use ganforge::Error;
use std::path::{Path, PathBuf};

/// `../shared/data/SUB` beside the checkout, or `None` (with the skip reason printed).
fn shared(sub: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(sub);
    if p.exists() {
        Some(p)
    } else {
        println!("SKIP: {} is absent", p.display());
        None
    }
}

/// A fresh, empty temporary folder for one test.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ganforge-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Asserts `r` is an [`Error::Data`] whose message names `path` and contains `problem`.
fn assert_data_err<T: std::fmt::Debug>(r: ganforge::Result<T>, path: &Path, problem: &str) {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    assert!(matches!(e, Error::Data { .. }), "not a data error: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name {}: {msg}",
        path.display()
    );
    assert!(msg.contains(problem), "message lacks `{problem}`: {msg}");
}

fn in_range(ds: &Dataset) -> bool {
    ds.images.iter().all(|v| (-1.0..=1.0).contains(v))
}

/// Saves images `0..n` of `ds` as a grid PNG, magnified 3x (for a person to look at).
fn save_grid(ds: &Dataset, n: usize, nrow: usize, path: &Path) {
    let [c, h, w] = ds.image_shape();
    let rows = n.div_ceil(nrow);
    let (gw, gh) = (nrow * (w + 2), rows * (h + 2));
    // Each pixel drawn as an S x S block so small images are easy to see.
    const S: usize = 3;
    let mut img = image::RgbImage::new((gw * S) as u32, (gh * S) as u32);
    for i in 0..n {
        let data = ds.image(i).unwrap();
        let (ox, oy) = ((i % nrow) * (w + 2) + 1, (i / nrow) * (h + 2) + 1);
        for y in 0..h {
            for x in 0..w {
                let px: Vec<u8> = (0..3)
                    .map(|k| {
                        let v = data[(k % c) * h * w + y * w + x];
                        ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
                    })
                    .collect();
                for (sy, sx) in (0..S).flat_map(|a| (0..S).map(move |b| (a, b))) {
                    img.put_pixel(
                        ((ox + x) * S + sx) as u32,
                        ((oy + y) * S + sy) as u32,
                        image::Rgb([px[0], px[1], px[2]]),
                    );
                }
            }
        }
    }
    img.save(path).unwrap();
}

// ---- MNIST / Fashion-MNIST --------------------------------------------------------------

#[test]
fn mnist_train_and_test_from_shared_data() {
    let Some(dir) = shared("mnist") else { return };
    let spec = DataSpec::parse(&format!("mnist:{}", dir.display())).unwrap();
    let ds = spec.load_images(&LoadOptions::default()).unwrap();
    assert_eq!(ds.len(), 60_000);
    assert_eq!(ds.image_shape(), [1, 28, 28]);
    assert_eq!(ds.num_classes, 10);
    assert_eq!(ds.label(0), Some(5));
    assert_eq!(
        ds.class_counts(),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert!(in_range(&ds));
    let (lo, hi) = ds
        .images
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert_eq!((lo, hi), (-1.0, 1.0));
    save_grid(
        &ds,
        100,
        10,
        &std::env::temp_dir().join("ganforge_mnist_grid.png"),
    );
    // The corner of an MNIST image is background.
    assert_eq!(ds.image(0).unwrap()[0], -1.0);

    let test = idx::load_mnist(&dir, Split::Test).unwrap();
    assert_eq!(
        test.class_counts(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

#[test]
fn fashion_mnist_labels_only_names_the_missing_images_file() {
    let Some(dir) = shared("fashion-mnist") else {
        return;
    };
    let labels = idx::read_idx(
        &dir.join("train-labels-idx1-ubyte.gz"),
        idx::LABELS_MAGIC,
        "label",
    )
    .unwrap();
    assert_eq!(labels.dims, vec![60_000]);
    let r = idx::load_fashion_mnist(&dir, Split::Train);
    assert_data_err(r, &dir, "train-images-idx3-ubyte.gz");
}

/// An IDX file: magic, dims, then `data`.
fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_plain_and_gzipped_files_load_from_a_directory() {
    let dir = temp_dir("idx-ok");
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 4) as u8).collect();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx_bytes(idx::IMAGES_MAGIC, &[3, 4, 5], &pixels),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        gzip(&idx_bytes(idx::LABELS_MAGIC, &[3], &[7, 0, 9])),
    )
    .unwrap();
    let ds = idx::load_mnist(&dir, Split::Test).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.image_shape(), [1, 4, 5]);
    assert_eq!(ds.labels, Some(vec![7, 0, 9]));
    assert_eq!(ds.images[0], -1.0);
    assert_eq!(ds.images[1], (4.0 / 255.0 - 0.5) / 0.5);
    // The train split is missing: the error lists the names looked for.
    let e = idx::load_mnist(&dir, Split::Train).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("train-images-idx3-ubyte.gz"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_idx_files_are_clear_errors() {
    let dir = temp_dir("idx-bad");
    let labels = dir.join("train-labels-idx1-ubyte");
    let images = dir.join("train-images-idx3-ubyte");
    std::fs::write(&labels, idx_bytes(idx::LABELS_MAGIC, &[2], &[1, 2])).unwrap();

    // A labels file where images belong: bad magic.
    std::fs::write(&images, idx_bytes(idx::LABELS_MAGIC, &[2], &[1, 2])).unwrap();
    assert_data_err(
        idx::load_mnist(&dir, Split::Train),
        &images,
        "bad IDX magic 0x00000801, expected 0x00000803",
    );

    // Truncated pixel data, plain and gzipped.
    let short = idx_bytes(idx::IMAGES_MAGIC, &[2, 28, 28], &[0u8; 1000]);
    std::fs::write(&images, &short).unwrap();
    assert_data_err(
        idx::load_mnist(&dir, Split::Train),
        &images,
        "expected 1568 bytes of pixel data for dims [2, 28, 28], found 1000",
    );
    std::fs::write(&images, gzip(&short)).unwrap();
    assert_data_err(
        idx::load_mnist(&dir, Split::Train),
        &images,
        "expected 1568 bytes of pixel data",
    );
    // A gzip stream cut in the middle.
    let gz = gzip(&idx_bytes(idx::IMAGES_MAGIC, &[2, 28, 28], &[7u8; 1568]));
    std::fs::write(&images, &gz[..gz.len() / 2]).unwrap();
    assert_data_err(idx::load_mnist(&dir, Split::Train), &images, "truncated");
    // A header cut short.
    std::fs::write(&images, [0u8, 0, 8]).unwrap();
    assert_data_err(
        idx::load_mnist(&dir, Split::Train),
        &images,
        "too short for an IDX header",
    );

    // Label and image counts disagree.
    std::fs::write(
        &images,
        idx_bytes(idx::IMAGES_MAGIC, &[3, 2, 2], &[0u8; 12]),
    )
    .unwrap();
    assert_data_err(
        idx::load_mnist(&dir, Split::Train),
        &labels,
        "2 labels for 3 images",
    );
    // A label past 9.
    std::fs::write(&labels, idx_bytes(idx::LABELS_MAGIC, &[3], &[1, 12, 2])).unwrap();
    assert_data_err(
        idx::load_mnist(&dir, Split::Train),
        &labels,
        "label 12 at index 1 is out of range",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- CIFAR-10 ---------------------------------------------------------------------------

#[test]
fn cifar10_from_shared_data() {
    let Some(dir) = shared("cifar10") else { return };
    let ds = DataSpec::parse(&format!("cifar10:{}", dir.display()))
        .unwrap()
        .load_images(&LoadOptions::default())
        .unwrap();
    assert_eq!(ds.len(), 10_000);
    assert_eq!(ds.image_shape(), [3, 32, 32]);
    assert_eq!(ds.labels.as_ref().unwrap()[..5], [6, 9, 9, 4, 1]);
    assert_eq!(
        ds.class_counts(),
        vec![1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    );
    assert_eq!(ds.class_names[0], "airplane");
    assert_eq!(ds.class_names[9], "truck");
    let img = ds.image(0).unwrap();
    let corner = [img[0], img[1024], img[2048]];
    let want = [59u8, 62, 63].map(ganforge::data::normalize_u8);
    assert_eq!(corner, want);
    assert!(in_range(&ds));

    let test = cifar::load_cifar10(&dir, Split::Test).unwrap();
    assert_eq!(test.len(), 1000);
    assert_eq!(test.labels.as_ref().unwrap()[..5], [3, 8, 8, 0, 6]);
}

#[test]
fn corrupt_cifar_files_are_clear_errors() {
    let dir = temp_dir("cifar-bad");
    let f = dir.join("data_batch_1.bin");
    let mut rec = vec![3u8; cifar::RECORD_LEN * 2];
    std::fs::write(&f, &rec[..cifar::RECORD_LEN + 100]).unwrap();
    assert_data_err(
        cifar::load_cifar10(&dir, Split::Train),
        &f,
        "size 3173 bytes is not a whole number of 3073-byte CIFAR-10 records",
    );
    rec[cifar::RECORD_LEN] = 10;
    std::fs::write(&f, &rec).unwrap();
    assert_data_err(
        cifar::load_cifar10(&dir, Split::Train),
        &f,
        "label 10 of record 1 is out of range",
    );
    // No test batches.
    assert_data_err(
        cifar::load_cifar10(&dir, Split::Test),
        &dir,
        "test_batch*.bin",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- image folders ----------------------------------------------------------------------

#[test]
fn faces_folder_at_64_pixels() {
    let Some(src) = shared("faces/celebA") else {
        return;
    };
    let dir = temp_dir("faces");
    for i in 1..=200 {
        let name = format!("{i:06}.jpg");
        std::fs::copy(src.join(&name), dir.join(&name)).unwrap();
    }
    let ds = DataSpec::Folder(dir.clone())
        .load_images(&LoadOptions {
            image_size: Some(64),
            ..LoadOptions::default()
        })
        .unwrap();
    assert_eq!(ds.len(), 200);
    assert_eq!(ds.image_shape(), [3, 64, 64]);
    assert_eq!(ds.labels, None);
    assert!(in_range(&ds));
    // Faces are neither flat black nor flat white.
    let mean = ds.images.iter().sum::<f32>() / ds.images.len() as f32;
    assert!(mean > -0.8 && mean < 0.8, "{mean}");
    let gray = folder::load_folder(&dir, 32, ColorMode::Gray).unwrap();
    assert_eq!(gray.image_shape(), [1, 32, 32]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn image_folder_with_classes_converts_mixed_sizes_and_modes() {
    let dir = temp_dir("classes");
    std::fs::create_dir_all(dir.join("zebra")).unwrap();
    std::fs::create_dir_all(dir.join("ant/nested")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    // ant: an RGB 40x20 PNG (pure red) and a gray 16x30 PNG (white), one in a nested folder.
    image::RgbImage::from_pixel(40, 20, image::Rgb([255, 0, 0]))
        .save(dir.join("ant/a.png"))
        .unwrap();
    image::GrayImage::from_pixel(16, 30, image::Luma([255]))
        .save(dir.join("ant/nested/b.png"))
        .unwrap();
    // zebra: an RGBA PNG and a JPEG (black).
    image::RgbaImage::from_pixel(9, 9, image::Rgba([0, 0, 255, 128]))
        .save(dir.join("zebra/c.png"))
        .unwrap();
    image::RgbImage::from_pixel(24, 24, image::Rgb([0, 0, 0]))
        .save(dir.join("zebra/d.JPG"))
        .unwrap();

    let ds = folder::load_folder(&dir, 8, ColorMode::Rgb).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.image_shape(), [3, 8, 8]);
    assert_eq!(ds.class_names, vec!["ant", "zebra"]);
    assert_eq!(ds.num_classes, 2);
    assert_eq!(ds.labels, Some(vec![0, 0, 1, 1]));
    let red = ds.image(0).unwrap();
    assert!(red[..64].iter().all(|&v| v == 1.0) && red[64..].iter().all(|&v| v == -1.0));
    assert!(ds.image(1).unwrap().iter().all(|&v| v == 1.0));
    let blue = ds.image(2).unwrap();
    assert!(blue[128..].iter().all(|&v| v == 1.0) && blue[..128].iter().all(|&v| v == -1.0));
    assert!(ds.image(3).unwrap().iter().all(|&v| v < -0.95));

    let gray = folder::load_folder(&dir, 8, ColorMode::Gray).unwrap();
    assert_eq!(gray.image_shape(), [1, 8, 8]);
    // PIL's luma of pure red: (19595 * 255 + 0x8000) >> 16 = 76.
    assert!(gray
        .image(0)
        .unwrap()
        .iter()
        .all(|&v| v == ganforge::data::normalize_u8(76)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_or_missing_images_are_clear_errors() {
    let dir = temp_dir("folder-bad");
    image::GrayImage::from_pixel(10, 10, image::Luma([3]))
        .save(dir.join("good.png"))
        .unwrap();
    let bad = dir.join("garbage.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    assert_data_err(
        folder::load_folder(&dir, 8, ColorMode::Rgb),
        &bad,
        "cannot decode image",
    );
    let empty = temp_dir("folder-empty");
    assert_data_err(
        folder::load_folder(&empty, 8, ColorMode::Rgb),
        &empty,
        "no images found",
    );
    let missing = empty.join("nope");
    assert_data_err(
        folder::load_folder(&missing, 8, ColorMode::Rgb),
        &missing,
        "no such folder",
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

// ---- built-in digits --------------------------------------------------------------------

#[test]
fn digits_are_balanced_in_range_and_deterministic() {
    let ds = digits::generate(1000, 28, 7).unwrap();
    assert_eq!(ds.len(), 1000);
    assert_eq!(ds.image_shape(), [1, 28, 28]);
    assert_eq!(ds.class_counts(), vec![100; 10]);
    // For a person to look at: ten of each digit, one digit per column.
    save_grid(
        &ds,
        100,
        10,
        &std::env::temp_dir().join("ganforge_digits_grid.png"),
    );
    assert!(in_range(&ds));
    // Ink covers a plausible part of each image, as in MNIST (about 19% of pixels).
    for i in 0..ds.len() {
        let img = ds.image(i).unwrap();
        let ink = img.iter().filter(|&&v| v > 0.0).count();
        assert!((20..400).contains(&ink), "digit {i} has {ink} ink pixels");
        // The border rows and columns stay (almost) black.
        assert!(
            img[..28].iter().all(|&v| v < -0.9),
            "digit {i} touches the top"
        );
    }
    assert_eq!(ds, digits::generate(1000, 28, 7).unwrap());
    assert_ne!(ds.images, digits::generate(1000, 28, 8).unwrap().images);
    // A prefix does not depend on how many are drawn.
    assert_eq!(
        digits::generate(10, 28, 7).unwrap().images[..],
        ds.images[..10 * 784]
    );

    let big = DataSpec::Digits
        .load_images(&LoadOptions {
            digits_count: 20,
            image_size: Some(64),
            color: Some(ColorMode::Rgb),
            seed: 1,
            ..LoadOptions::default()
        })
        .unwrap();
    assert_eq!(big.image_shape(), [3, 64, 64]);
    assert!(in_range(&big));
}

// ---- specs and the batcher --------------------------------------------------------------

#[test]
fn specs_parse_and_toy_specs_load_points() {
    assert!(matches!(
        DataSpec::parse("ring8").unwrap().load(&LoadOptions::default()).unwrap(),
        Data::Points(m) if m.centres.len() == 8
    ));
    assert!(matches!(
        "grid25".parse::<DataSpec>().unwrap().load(&LoadOptions::default()).unwrap(),
        Data::Points(m) if m.centres.len() == 25
    ));
    let e = DataSpec::parse("svhn:/x").unwrap_err().to_string();
    assert!(
        e.contains("unknown data spec") && e.contains("cifar10:DIR"),
        "{e}"
    );
    assert!(DataSpec::Ring8
        .load_images(&LoadOptions::default())
        .is_err());
}

#[test]
fn batcher_shuffles_reproducibly_and_visits_every_item_each_epoch() {
    let ds = digits::generate(50, 8, 3).unwrap();
    // Tag each image by its index through its first pixel, to follow it through batches.
    let mut tagged = ds.clone();
    for i in 0..50 {
        tagged.images[i * 64] = i as f32;
    }
    let run = |seed: u64| -> Vec<(usize, Vec<usize>, Vec<usize>)> {
        let b = Batcher::new(tagged.clone(), 8, seed)
            .unwrap()
            .drop_last(false);
        assert_eq!(b.batches_per_epoch(), 7);
        b.take(21)
            .map(|r| {
                let batch = r.unwrap();
                let x = batch.images.to_vec();
                let ids = x.chunks(64).map(|c| c[0] as usize).collect();
                (batch.epoch, ids, batch.labels.unwrap())
            })
            .collect()
    };
    let a = run(11);
    assert_eq!(a, run(11));
    assert_ne!(a, run(12));
    for epoch in 0..3 {
        let mut ids: Vec<usize> = a
            .iter()
            .filter(|(e, _, _)| *e == epoch)
            .flat_map(|(_, ids, _)| ids.clone())
            .collect();
        assert_eq!(ids.len(), 50);
        let order = ids.clone();
        ids.sort();
        assert_eq!(ids, (0..50).collect::<Vec<_>>(), "epoch {epoch}");
        assert_ne!(
            order,
            (0..50).collect::<Vec<_>>(),
            "epoch {epoch} not shuffled"
        );
    }
    // Labels travel with their images; epochs are shuffled differently.
    for (_, ids, labels) in &a {
        assert!(ids.iter().zip(labels).all(|(i, l)| i % 10 == *l));
    }
    assert_ne!(a[0].1, a[7].1);
    // Seeking reproduces the same batch, as a resumed run needs.
    let mut b = Batcher::new(tagged.clone(), 8, 11)
        .unwrap()
        .drop_last(false);
    b.seek(1, 3);
    let x = b.next_batch().unwrap().images.to_vec();
    let ids: Vec<usize> = x.chunks(64).map(|c| c[0] as usize).collect();
    assert_eq!(ids, a[7 + 3].1);
    // Dropping the partial batch: 6 full batches per epoch.
    let b = Batcher::new(tagged, 8, 11).unwrap();
    assert_eq!(b.batches_per_epoch(), 6);
    assert!(b.take(12).all(|r| r.unwrap().images.dims() == [8, 1, 8, 8]));
}
