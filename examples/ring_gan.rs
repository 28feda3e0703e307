//! A GAN on the plane: a vanilla GAN (two small MLPs, binary cross-entropy) learns the ring of
//! eight Gaussians, and every `--every` steps a scatter plot of real versus generated points
//! is written as a PNG. Watch the generated points: a plain GAN tends to cover a few modes,
//! hop between them, and leave bridges across the ring: mode collapse, made visible.
//!
//! ```text
//! cargo run --release --example ring_gan                              # 200 steps: a quick look
//! cargo run --release --example ring_gan -- --steps 3000 --every 250  # a good picture (about a minute)
//! cargo run --release --example ring_gan -- --out my_plots --lr 2e-4 --seed 3
//! ```
//!
//! The default (200 steps) is small so that `cargo test`, which runs this example, finishes in
//! seconds; the points are still a blob then. Use `--steps 3000` or more for a picture worth
//! looking at: by then the points sit on the ring, some modes dense, some thin or missing,
//! with bridges of points between them; the printed `points per mode` shows it in numbers.
//! The PNGs go to `--out` (default: `ganforge_ring_gan/` in the system temporary folder);
//! their paths are printed.
//!
//! What one step does is `Gan::train_step` (`src/gan/step.rs`): a discriminator update on
//! a real batch and `G(z)`, then a generator update with the non-saturating loss. The same
//! loop with the run folder, checkpoints and metrics is `ganforge train --data ring8`
//! (`src/gan/trainer.rs`); `ganforge demo` draws the result in the terminal instead.

use ganforge::data::toy::GaussianMixture;
use ganforge::gan::{DataShape, Gan, GanConfig, ModelKind};
use ganforge::{io, Device, Result, Rng, Tensor};
use std::path::PathBuf;

struct Args {
    steps: usize,
    every: usize,
    out: PathBuf,
    lr: f32,
    seed: u64,
    batch: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        steps: 200,
        every: 50,
        out: std::env::temp_dir().join("ganforge_ring_gan"),
        lr: 1e-3,
        seed: 0,
        batch: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| panic!("{name} needs a value (e.g. {name} 3000)"))
        };
        match flag.as_str() {
            "--steps" => a.steps = value("--steps").parse().expect("--steps N"),
            "--every" => a.every = value("--every").parse().expect("--every N"),
            "--out" => a.out = PathBuf::from(value("--out")),
            "--lr" => a.lr = value("--lr").parse().expect("--lr X"),
            "--seed" => a.seed = value("--seed").parse().expect("--seed S"),
            "--batch-size" => a.batch = value("--batch-size").parse().expect("--batch-size N"),
            // `cargo test FILTER` passes its own arguments on to every test target, this one
            // included: ignore what is not ours.
            other => eprintln!("ring_gan: ignoring argument {other:?}"),
        }
    }
    a.every = a.every.max(1);
    a
}

fn pairs(t: &Tensor) -> Vec<[f32; 2]> {
    t.to_vec().chunks_exact(2).map(|p| [p[0], p[1]]).collect()
}

fn main() -> Result<()> {
    let args = parse_args();
    let dev = Device::Cpu;
    let mixture = GaussianMixture::ring8();

    // The model family and sizes `ganforge train --model vanilla --data ring8` uses: G is
    // 8 -> 128 -> 128 -> 2 (ReLU), D is 2 -> 128 -> 128 -> 1 (LeakyReLU 0.2), Adam (0.5, 0.999).
    let shape = DataShape::points(0);
    let cfg = GanConfig {
        lr_g: args.lr,
        lr_d: args.lr,
        ..GanConfig::defaults_for_data(ModelKind::Vanilla, &shape)
    };
    let mut rng = Rng::new(args.seed);
    let mut gan = Gan::new(&cfg, &shape, &mut rng, &dev)?;

    // Fixed noise and a fixed real sample, so consecutive pictures are comparable.
    let mut plot_rng = Rng::new(args.seed ^ 0x5EED);
    let fixed_z = Tensor::randn(0.0, 1.0, [1000, gan.latent_dim()], &mut plot_rng, &dev);
    let real = pairs(&mixture.sample(1000, &mut plot_rng, &dev)?);

    std::fs::create_dir_all(&args.out).map_err(|e| ganforge::Error::Io {
        path: args.out.display().to_string(),
        source: e,
    })?;
    println!(
        "vanilla GAN on the ring of 8 Gaussians: {} steps of {} points, lr {}, plots every {} \
         steps into {}",
        args.steps,
        args.batch,
        args.lr,
        args.every,
        args.out.display()
    );

    let mut losses = Vec::new();
    for step in 0..=args.steps {
        if step > 0 {
            let batch = mixture.sample(args.batch, &mut rng, &dev)?;
            losses = gan.train_step(&batch, None, &mut rng)?;
        }
        if step % args.every == 0 || step == args.steps {
            let generated = gan.generate(&fixed_z, None, false)?;
            let flat = generated.to_vec();
            let cov = mixture.coverage(&flat);
            let path = args.out.join(format!("ring_step_{step:06}.png"));
            let title = format!(
                "step {step}: {}/8 modes covered, {:.0}% of points near a mode",
                cov.modes_covered,
                100.0 * cov.high_quality
            );
            io::plot_scatter(&path, &title, &real, &pairs(&generated), &mixture.centres)?;
            let shown: Vec<String> = losses.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            println!(
                "step {step:>6}  {:<52} modes {}/8  points per mode {:?}  -> {}",
                shown.join(" "),
                cov.modes_covered,
                cov.per_mode,
                path.display()
            );
        }
    }
    Ok(())
}
