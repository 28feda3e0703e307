//! The `ganforge` command line. Only argument parsing and reporting live here; the work is in
//! the library.

use clap::{Parser, Subcommand, ValueEnum};
use ganforge::data::toy::GaussianMixture;
use ganforge::nn::{LeakyRelu, Linear, LinearConfig, Module, Relu, Sequential};
use ganforge::optim::{Adam, AdamConfig, Optimizer};
use ganforge::{autograd, Device, Rng, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "ganforge", version, about = "GANs on a from-scratch autodiff engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a small MLP GAN on a built-in 2-D mixture of Gaussians (no files needed) and show
    /// how many modes it covers: mode collapse made visible.
    Demo(DemoArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ToyData {
    /// 8 Gaussians on a circle of radius 2.
    Ring8,
    /// 25 Gaussians on a 5x5 grid.
    Grid25,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Which mixture to learn.
    #[arg(long, value_enum, default_value = "ring8")]
    data: ToyData,
    /// Training steps (one D update and one G update each).
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    /// Points per batch.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Adam learning rate for both networks.
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Seed of every random choice (weights, noise, data).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

const LATENT: usize = 8;
const HIDDEN: usize = 128;

fn mlp(sizes: &[usize], hidden_act: fn() -> Box<dyn Module>, rng: &mut Rng, dev: &Device) -> ganforge::Result<Sequential> {
    let mut net = Sequential::new();
    for (i, pair) in sizes.windows(2).enumerate() {
        let cfg = LinearConfig {
            in_features: pair[0],
            out_features: pair[1],
            bias: true,
        };
        net = net.push(Linear::new(cfg, rng, dev)?);
        if i + 2 < sizes.len() {
            net = net.push_boxed(hidden_act());
        }
    }
    Ok(net)
}

fn demo(args: &DemoArgs) -> ganforge::Result<()> {
    let dev = Device::Cpu;
    let mut rng = Rng::new(args.seed);
    let mixture = match args.data {
        ToyData::Ring8 => GaussianMixture::ring8(),
        ToyData::Grid25 => GaussianMixture::grid25(),
    };
    let g = mlp(&[LATENT, HIDDEN, HIDDEN, 2], || Box::new(Relu), &mut rng, &dev)?;
    let d = mlp(&[2, HIDDEN, HIDDEN, 1], || Box::new(LeakyRelu(0.2)), &mut rng, &dev)?;
    let adam = AdamConfig {
        lr: args.lr,
        betas: (0.5, 0.999),
        ..AdamConfig::default()
    };
    let mut opt_g = Adam::new(g.parameters(), adam);
    let mut opt_d = Adam::new(d.parameters(), adam);
    let (ones, zeros) = (Tensor::ones([args.batch_size, 1], &dev), Tensor::zeros([args.batch_size, 1], &dev));

    println!(
        "ganforge demo: vanilla GAN (MLP {LATENT}-{HIDDEN}-{HIDDEN}-2 / 2-{HIDDEN}-{HIDDEN}-1, BCE, Adam {}) on {} modes, {} steps, batch {}",
        args.lr,
        mixture.centres.len(),
        args.steps,
        args.batch_size
    );
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}")
            .expect("valid template"),
    );
    for step in 1..=args.steps {
        // D step: real -> 1, fake -> 0 (fake detached: no gradient into G).
        let real = mixture.sample(args.batch_size, &mut rng, &dev)?;
        let z = Tensor::randn(0.0, 1.0, [args.batch_size, LATENT], &mut rng, &dev);
        let fake = g.forward(&z)?;
        opt_d.zero_grad();
        let loss_d = d.forward(&real)?.bce_with_logits(&ones)?.add(&d.forward(&fake.detach())?.bce_with_logits(&zeros)?)?;
        loss_d.backward()?;
        opt_d.step()?;
        // G step, non-saturating loss: make D call the fakes real.
        opt_g.zero_grad();
        let loss_g = d.forward(&fake)?.bce_with_logits(&ones)?;
        loss_g.backward()?;
        opt_g.step()?;
        if step % 50 == 0 || step == args.steps {
            bar.set_message(format!("loss_d {:.3} loss_g {:.3}", loss_d.to_scalar()?, loss_g.to_scalar()?));
        }
        bar.set_position(step as u64);
    }
    bar.finish();

    let _guard = autograd::no_grad();
    let z = Tensor::randn(0.0, 1.0, [2500, LATENT], &mut rng, &dev);
    let points = g.forward(&z)?.to_vec();
    let cov = mixture.coverage(&points);
    println!("{}", ascii_scatter(&points, &mixture));
    println!(
        "modes covered: {}/{}   high-quality samples (within 3 std of a mode): {:.1}%",
        cov.modes_covered,
        mixture.centres.len(),
        100.0 * cov.high_quality
    );
    println!("points per mode: {:?}", cov.per_mode);
    Ok(())
}

/// A terminal scatter plot: `o` marks a mode centre, `.:*#` the density of generated points.
fn ascii_scatter(points: &[f32], mixture: &GaussianMixture) -> String {
    let (cols, rows) = (61usize, 25usize);
    let extent = mixture
        .centres
        .iter()
        .flat_map(|c| [c[0].abs(), c[1].abs()])
        .fold(0.0f32, f32::max)
        * 1.5;
    let mut counts = vec![0usize; cols * rows];
    let cell = |x: f32, y: f32| {
        let c = ((x + extent) / (2.0 * extent) * cols as f32).floor();
        let r = ((extent - y) / (2.0 * extent) * rows as f32).floor();
        (c >= 0.0 && r >= 0.0 && (c as usize) < cols && (r as usize) < rows).then(|| r as usize * cols + c as usize)
    };
    for p in points.chunks_exact(2) {
        if let Some(i) = cell(p[0], p[1]) {
            counts[i] += 1;
        }
    }
    let mut grid: Vec<char> = counts
        .iter()
        .map(|&n| match n {
            0 => ' ',
            1..=2 => '.',
            3..=9 => ':',
            10..=39 => '*',
            _ => '#',
        })
        .collect();
    for c in &mixture.centres {
        if let Some(i) = cell(c[0], c[1]) {
            if grid[i] == ' ' {
                grid[i] = 'o';
            }
        }
    }
    let mut out = format!("+{}+\n", "-".repeat(cols));
    for r in 0..rows {
        out.push('|');
        out.extend(&grid[r * cols..(r + 1) * cols]);
        out.push_str("|\n");
    }
    out.push_str(&format!("+{}+  (o: an uncovered mode centre; . : * #: generated points)", "-".repeat(cols)));
    out
}
