#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures that tests/pytorch_parity.rs checks ganforge against.

The fixtures are committed, so neither CI nor users need PyTorch. To regenerate them:

    pip install torch safetensors numpy      # the full torch wheel
    python3 scripts/make_fixtures.py         # from the repository root

Everything is float32 and computed on the CPU with a fixed seed. Widths are reduced so the
files stay small (about 250 KB in all). Every tensor is stored contiguous, scalars as
1-element tensors. Files written to tests/fixtures/:

conv_transpose2d_output_padding.safetensors
    conv_transpose2d with odd sizes: x [3,5,7,9], weight [5,4,3,3], bias [4], stride 2,
    padding 1, output_padding 1 -> out [3,4,14,18]. L = sum(out * w_rand).
    Keys: x, weight, bias, w_rand, out, grad.x, grad.weight, grad.bias.

batch_norm_train.safetensors
    BatchNorm in training mode (eps 1e-5, momentum 0.1), L = sum(out * w_rand).
    For p in {bn2d, bn1d} (bn2d: BatchNorm2d(5) on [3,5,7,9]; bn1d: BatchNorm1d(5) on [6,5]):
    p.x, p.weight, p.bias, p.running_mean, p.running_var (before), p.w_rand, p.out,
    p.grad.x, p.grad.weight, p.grad.bias, p.running_mean_after, p.running_var_after
    (the running variance uses the unbiased batch variance).

gradient_penalty.safetensors
    The W4 WGAN-GP critic with reduced widths (ndf = 4): D.main = Conv(1,4,k4,s2,p1) ->
    LeakyReLU(0.2) -> Conv(4,8,k4,s2,p1) -> LeakyReLU(0.2) -> Flatten -> Linear(392,1), all
    with bias, default PyTorch init. Batch 3 of 1x28x28.
    real ~ U(-1,1), fake ~ U(-1,1), eps ~ U(0,1) as [3,1,1,1];
    x_hat = eps*real + (1-eps)*fake; d_x_hat = D(x_hat) [3,1];
    g = autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)[0];
    gp = ((g.view(3,-1).norm(2, dim=1) - 1)**2).mean();
    loss = D(fake).mean() - D(real).mean() + 10*gp (the W4 critic loss).
    Keys: D.main.{0,2,5}.{weight,bias}, real, fake, eps, x_hat, d_x_hat, g, gp, loss,
    grad_gp.<param> = d gp / d param (the second-order path; zeros where gp does not depend on
    the parameter), grad_loss.<param> = d loss / d param.

dcgan_pair.safetensors
    The W1 DCGAN-MNIST pair with reduced widths (nz = 8, ngf = 4, ndf = 4), batch 3, BN in
    training mode (eps 1e-5, momentum 0.1), DCGAN init (conv weights N(0, 0.02), BN gamma
    N(1, 0.02), BN beta 0; conv/linear biases keep PyTorch's default init).
      G.main: 0 ConvT(8,16,k7,s1,p0,no bias) 1 BN2d(16) 2 ReLU 3 ConvT(16,8,k4,s2,p1,no bias)
              4 BN2d(8) 5 ReLU 6 ConvT(8,1,k4,s2,p1,bias) 7 Tanh;  G(z) views z [3,8] as [3,8,1,1].
      D.main: 0 Conv(1,4,k4,s2,p1,bias) 1 LeakyReLU(0.2) 2 Conv(4,8,k4,s2,p1,no bias)
              3 BN2d(8) 4 LeakyReLU(0.2) 5 Flatten 6 Linear(392,1) (logits).
    One W1 step, in this order:
      1. fake = G(z)                           (G's BN running stats update once)
      2. d_real = D(real); d_fake = D(fake.detach())   (D's BN stats update twice, real first)
      3. loss_d = BCEWithLogits(d_real, 1) + BCEWithLogits(d_fake, 0); grads of D's params
      4. Adam step on D (lr 2e-4, betas (0.5, 0.999), eps 1e-8, no weight decay)
      5. d_fake_g = D(fake) with the *updated* D     (D's BN stats update a third time)
      6. loss_g = BCEWithLogits(d_fake_g, 1); grads of G's params
      7. Adam step on G
    Keys:
      initial state:  G.main.*.{weight,bias,running_mean,running_var}, D.main.* (same),
                      z [3,8], real [3,1,28,28]
      forward values: fake, d_real, d_fake, loss_d, d_fake_g, loss_g
      gradients:      grad.<param name> (D's for loss_d, G's for loss_g)
      after step:     adam.<param name> (every D and G parameter after its one Adam step)
      BN buffers:     after_d.D.main.3.running_{mean,var} (after step 2),
                      final.<buffer name> (G's after step 1, D's after step 5)
    num_batches_tracked is not stored.
"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def save(name, tensors):
    tensors = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}
    path = os.path.join(OUT_DIR, name)
    save_file(tensors, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


def scalar(t):
    return t.detach().reshape(1)


def conv_transpose_fixture():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 7, 9, requires_grad=True)
    weight = (torch.randn(5, 4, 3, 3) * 0.3).requires_grad_()
    bias = torch.randn(4).requires_grad_()
    out = F.conv_transpose2d(x, weight, bias, stride=2, padding=1, output_padding=1)
    assert out.shape == (3, 4, 14, 18), out.shape
    w_rand = torch.rand_like(out) * 2 - 1
    gx, gw, gb = torch.autograd.grad((out * w_rand).sum(), [x, weight, bias])
    save(
        "conv_transpose2d_output_padding.safetensors",
        {
            "x": x,
            "weight": weight,
            "bias": bias,
            "w_rand": w_rand,
            "out": out,
            "grad.x": gx,
            "grad.weight": gw,
            "grad.bias": gb,
        },
    )


def batch_norm_case(prefix, bn, x):
    c = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(1 + 0.5 * torch.randn(c))
        bn.bias.copy_(0.5 * torch.randn(c))
        bn.running_mean.copy_(torch.randn(c))
        bn.running_var.copy_(0.5 + torch.rand(c))
    before = {
        f"{prefix}.weight": bn.weight.clone(),
        f"{prefix}.bias": bn.bias.clone(),
        f"{prefix}.running_mean": bn.running_mean.clone(),
        f"{prefix}.running_var": bn.running_var.clone(),
    }
    bn.train()
    x = x.requires_grad_()
    out = bn(x)
    w_rand = torch.rand_like(out) * 2 - 1
    gx, gw, gb = torch.autograd.grad((out * w_rand).sum(), [x, bn.weight, bn.bias])
    return {
        f"{prefix}.x": x,
        **before,
        f"{prefix}.w_rand": w_rand,
        f"{prefix}.out": out,
        f"{prefix}.grad.x": gx,
        f"{prefix}.grad.weight": gw,
        f"{prefix}.grad.bias": gb,
        f"{prefix}.running_mean_after": bn.running_mean,
        f"{prefix}.running_var_after": bn.running_var,
    }


def batch_norm_fixture():
    torch.manual_seed(2)
    # non-zero per-channel means and non-unit scales, so normalisation does something
    x2 = torch.randn(3, 5, 7, 9) * torch.linspace(0.5, 3.0, 5).view(1, 5, 1, 1) + torch.linspace(
        -2.0, 2.0, 5
    ).view(1, 5, 1, 1)
    x1 = torch.randn(6, 5) * 1.7 + 0.8
    t = {}
    t.update(batch_norm_case("bn2d", nn.BatchNorm2d(5, eps=1e-5, momentum=0.1), x2))
    t.update(batch_norm_case("bn1d", nn.BatchNorm1d(5, eps=1e-5, momentum=0.1), x1))
    save("batch_norm_train.safetensors", t)


class Critic(nn.Module):
    def __init__(self, ndf):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, ndf, 4, 2, 1, bias=True),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1, bias=True),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * ndf * 7 * 7, 1),
        )

    def forward(self, x):
        return self.main(x)


def gradient_penalty_fixture():
    torch.manual_seed(3)
    d = Critic(4)
    init = {f"D.{k}": v.clone() for k, v in d.state_dict().items()}
    params = dict(d.named_parameters())
    names = list(params)
    real = torch.rand(3, 1, 28, 28) * 2 - 1
    fake = torch.rand(3, 1, 28, 28) * 2 - 1
    eps = torch.rand(3, 1, 1, 1)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_()
    d_x_hat = d(x_hat)
    (g,) = torch.autograd.grad(d_x_hat.sum(), x_hat, create_graph=True)
    gp = ((g.view(3, -1).norm(2, dim=1) - 1) ** 2).mean()
    # gp does not depend on the last layer's bias at all (its gradient is stored as zeros), and
    # depends on the conv biases only through LeakyReLU's piecewise-constant slope (zeros too).
    grads_gp = torch.autograd.grad(
        gp, [params[n] for n in names], retain_graph=True, allow_unused=True
    )
    grads_gp = [torch.zeros_like(params[n]) if gg is None else gg for n, gg in zip(names, grads_gp)]
    loss = d(fake).mean() - d(real).mean() + 10 * gp
    grads_loss = torch.autograd.grad(loss, [params[n] for n in names])
    t = {
        **init,
        "real": real,
        "fake": fake,
        "eps": eps,
        "x_hat": x_hat,
        "d_x_hat": d_x_hat,
        "g": g,
        "gp": scalar(gp),
        "loss": scalar(loss),
    }
    for n, gg, gl in zip(names, grads_gp, grads_loss):
        t[f"grad_gp.D.{n}"] = gg
        t[f"grad_loss.D.{n}"] = gl
    save("gradient_penalty.safetensors", t)


class Generator(nn.Module):
    def __init__(self, nz, ngf):
        super().__init__()
        self.nz = nz
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, 4 * ngf, 7, 1, 0, bias=False),
            nn.BatchNorm2d(4 * ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * ngf, 2 * ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * ngf, 1, 4, 2, 1, bias=True),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.main(z.view(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, ndf):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, ndf, 4, 2, 1, bias=True),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * ndf),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * ndf * 7 * 7, 1),
        )

    def forward(self, x):
        return self.main(x)


def dcgan_init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def buffers(prefix, module):
    return {f"{prefix}.{k}": v.clone() for k, v in module.named_buffers() if "num_batches" not in k}


def dcgan_fixture():
    torch.manual_seed(4)
    nz, ngf, ndf, batch = 8, 4, 4, 3
    g = Generator(nz, ngf)
    d = Discriminator(ndf)
    g.apply(dcgan_init)
    d.apply(dcgan_init)
    g.train()
    d.train()
    t = {}
    for prefix, m in (("G", g), ("D", d)):
        for k, v in m.state_dict().items():
            if "num_batches" not in k:
                t[f"{prefix}.{k}"] = v.clone()
    z = torch.randn(batch, nz)
    real = torch.rand(batch, 1, 28, 28) * 2 - 1
    t["z"] = z
    t["real"] = real
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8)
    bce = nn.BCEWithLogitsLoss()

    # 1. generator forward
    fake = g(z)
    # 2-3. discriminator loss on real and detached fake, one backward on the sum
    opt_d.zero_grad()
    d_real = d(real)
    d_fake = d(fake.detach())
    loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
    loss_d.backward()
    t.update(buffers("after_d.D", d))
    for n, p in d.named_parameters():
        t[f"grad.D.{n}"] = p.grad.clone()
    # 4. D Adam step
    opt_d.step()
    # 5-6. generator loss through the updated D
    opt_g.zero_grad()
    d_fake_g = d(fake)
    loss_g = bce(d_fake_g, torch.ones_like(d_fake_g))
    loss_g.backward()
    for n, p in g.named_parameters():
        t[f"grad.G.{n}"] = p.grad.clone()
    # 7. G Adam step
    opt_g.step()

    for prefix, m in (("G", g), ("D", d)):
        for n, p in m.named_parameters():
            t[f"adam.{prefix}.{n}"] = p.clone()
    t.update(buffers("final.G", g))
    t.update(buffers("final.D", d))
    t.update(
        {
            "fake": fake,
            "d_real": d_real,
            "d_fake": d_fake,
            "loss_d": scalar(loss_d),
            "d_fake_g": d_fake_g,
            "loss_g": scalar(loss_g),
        }
    )
    # Adam's first step moves each parameter by about lr * sign(grad); a gradient near Adam's
    # eps (1e-8) would make that step sensitive to rounding, so report the smallest ones.
    smallest = min(
        (p.grad.abs().min().item(), f"{pre}.{n}")
        for pre, m in (("G", g), ("D", d))
        for n, p in m.named_parameters()
    )
    print(f"dcgan: smallest |grad| = {smallest[0]:.3e} ({smallest[1]})")
    save("dcgan_pair.safetensors", t)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)
    conv_transpose_fixture()
    batch_norm_fixture()
    gradient_penalty_fixture()
    dcgan_fixture()
    print(f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
