"""A zoo of common layers and functions, scripted and exported by the operator-allowlist tests.

The allowlist in models_app/operators.py was built from the graphs of these modules; every one of them
must keep loading on the node.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import Dim


class Elementwise(nn.Module):
    """Pointwise math and activations as functions."""

    def forward(self, x):
        y = torch.exp(x) + torch.log(x.abs() + 1) - torch.sqrt(x.abs()) * torch.sin(x) / (torch.cos(x) + 2)
        y = y + torch.tanh(x) + torch.sigmoid(x) + F.gelu(x) + F.silu(x) + F.leaky_relu(x) + F.elu(x)
        y = y + F.hardtanh(x) + F.softplus(x) + F.mish(x) + F.hardswish(x) + F.relu6(x) + F.selu(x) + F.celu(x)
        y = y + F.logsigmoid(x) + F.softsign(x) + F.tanhshrink(x) + F.hardsigmoid(x) + F.threshold(x, 0.1, 0.0)
        y = y + x.pow(3) + x.abs().neg() + x.round() + x.floor() + x.ceil() + x.sign() + torch.square(x)
        y = y + torch.rsqrt(x.abs() + 1) + torch.erf(x) + torch.atan(x) + torch.log1p(x.abs()) + torch.expm1(x)
        y = y + torch.log2(x.abs() + 1) + torch.fmod(x, 2) + torch.remainder(x, 2) + x.reciprocal().nan_to_num()
        y = y + torch.clamp(x, -1.0, 1.0) + torch.clamp_min(x, 0) + torch.clamp_max(x, 0)
        y = y + torch.where(x > 0, x, -x) + torch.maximum(x, y) + torch.minimum(x, y) + x.masked_fill(x > 1, 0.0)
        y = y + torch.div(x, 2, rounding_mode="floor") + x // 2 + F.dropout(x, 0.1, False)
        y = y + (x == 0).float() + (x != 0).float() + (x >= 0).float() + (x <= 0).float()
        y = y + torch.logical_and(x > 0, x < 1).float() + torch.isnan(x).float()
        return y + x.to(torch.float64).to(torch.float32) + x.type_as(y) + x.clone().contiguous()


class Reductions(nn.Module):
    """Reductions, sorting and normalising functions."""

    def forward(self, x):
        y = x.mean(dim=-1, keepdim=True) + x.sum() + x.max() - x.min() + x.std() + x.var() + x.prod() + x.norm()
        y = y + x.logsumexp(-1, keepdim=True) + x.amax(-1, keepdim=True) + x.amin(-1, keepdim=True)
        y = y + x.cumsum(-1) + torch.topk(x, 2, dim=-1).values.sum() + x.sort(dim=-1).values
        y = y + x.argsort(dim=-1).float() + x.argmax().float() + x.any().float() + x.all().float()
        y = y + F.normalize(x) + x.softmax(-1) + x.log_softmax(-1) + F.cosine_similarity(x, x).unsqueeze(-1)
        return y + F.pairwise_distance(x, x).unsqueeze(-1) + x.masked_select(x > 0).sum() + x[x > 100].sum()


class Shapes(nn.Module):
    """Views, joins, indexing and tensor creation."""

    def forward(self, x):
        rows, cols = x.shape[0], x.shape[1]
        y = torch.stack([x, x]).permute(1, 0, 2).reshape(rows, -1)[:, :cols].reshape(-1).unsqueeze(0).squeeze(0)
        y = y.view(rows, cols) + torch.cat([x, x], dim=1)[:, :cols] + x.flatten().reshape(rows, cols)
        y = y + x.expand(rows, cols) + x.repeat(1, 1) + torch.tril(x) + torch.triu(x) + x.t().t()
        y = y + x.split(1, dim=1)[0] + x.chunk(1, dim=1)[0] + x.narrow(1, 0, cols) + torch.flip(x, [0])
        y = y + torch.roll(x, 1, 0) + torch.gather(x, 1, torch.zeros_like(x, dtype=torch.long))
        y = y + x.index_select(0, torch.zeros(rows, dtype=torch.long)) + x.transpose(0, 1).transpose(0, 1)
        y = y + torch.zeros_like(x) + torch.ones_like(x) + torch.full_like(x, 2.0) + x.new_zeros(x.shape)
        y = y + torch.arange(cols).float() + torch.linspace(0, 1, cols) + torch.zeros(rows, cols)
        y = y + F.pad(x, (1, 1))[:, 1:-1] + F.one_hot(torch.zeros(rows, dtype=torch.long), cols).float()
        return y + torch.tensor([1.0, 2.0]).sum() + torch.ones(rows, cols) + torch.full((rows, cols), 3.0)


class LinearAlgebra(nn.Module):
    """Products: matmul, bmm, einsum, addmm, baddbmm, outer."""

    def forward(self, x):
        square = torch.matmul(x, x.transpose(-1, -2))
        identity = torch.eye(x.shape[1])
        y = torch.addmm(x, x, identity) + F.linear(x, identity) + x @ identity + torch.mm(x, identity)
        y = y + torch.einsum("ij,jk->ik", x, identity)
        batched = torch.bmm(x.unsqueeze(0), identity.unsqueeze(0)) + torch.baddbmm(
            x.unsqueeze(0), x.unsqueeze(0), identity.unsqueeze(0)
        )
        return y + batched.squeeze(0) + square.sum() + torch.outer(x[0], x[0]).sum() + torch.diag(identity).sum()


class Losses(nn.Module):
    """Loss functions, as some models return a loss from forward."""

    def forward(self, x):
        target = torch.zeros(x.shape[0], dtype=torch.long)
        return (
            F.mse_loss(x, x)
            + F.l1_loss(x, x)
            + F.cross_entropy(x, target)
            + F.binary_cross_entropy_with_logits(x, torch.zeros_like(x))
            + F.nll_loss(F.log_softmax(x, -1), target)
            + F.kl_div(x, x, reduction="batchmean")
            + F.smooth_l1_loss(x, x)
            + F.huber_loss(x, x)
        )


class ControlFlow(nn.Module):
    """What TorchScript emits for Python: loops, branches, lists, dicts, tuples, asserts and raises."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        if x.dim() != 2:
            raise ValueError(f"expected a 2-D input, got {x.dim()}-D")
        rows: list[torch.Tensor] = []
        for index in range(x.size(0)):
            rows.append(self.linear(x[index : index + 1]))
        y = torch.cat(rows)
        count = int(y.numel())
        named: dict[str, torch.Tensor] = {"y": y}
        pair = (y, float(count))
        while count > 100:
            count = count // 2
        if bool(y.sum() > pair[1]):
            y = y * 2
        assert y.shape[1] == 4, "four columns"
        return named["y"] + pair[0] + count + len(rows) + x.shape[-1] + min(count, 3) + max(count, 3)


class Branch(nn.Module):
    """Data-dependent control flow in a torch.export program (torch.cond)."""

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda x: x.sin(), lambda x: x.cos(), (x,))


class CountDown(nn.Module):
    """A loop in a torch.export program (torch._higher_order_ops.while_loop)."""

    def forward(self, x):
        from torch._higher_order_ops.while_loop import while_loop

        def condition(i, value):
            return i > 0

        def body(i, value):
            return i - 1, value * 2

        return while_loop(condition, body, (torch.tensor(3), x))[1]


class Recurrent(nn.Module):
    """A recurrent layer as models use it: its output sequence (a bare RNN scripts only overloads of forward)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)[0]


class Unflattened(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Unflatten(1, (2, 2)), nn.Flatten(), nn.Softmin(-1))
        self.similarity = nn.CosineSimilarity(dim=1)

    def forward(self, x):
        return self.layers(x) + self.similarity(x, x).unsqueeze(-1)


def _conv2d_stack():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, stride=2, groups=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(4, 2),
        nn.Softmax(-1),
    )


def _image_layers():
    return nn.Sequential(
        nn.ConvTranspose2d(3, 2, 3, stride=2),
        nn.GroupNorm(1, 2),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.InstanceNorm2d(2),
        nn.PixelShuffle(1),
        nn.AvgPool2d(2),
        nn.Sigmoid(),
        nn.LeakyReLU(),
        nn.GELU(),
        nn.SiLU(),
        nn.Hardswish(),
        nn.PReLU(),
        nn.Softplus(),
        nn.Mish(),
        nn.ReLU6(),
        nn.Hardtanh(),
        nn.Softsign(),
        nn.Identity(),
        nn.ZeroPad2d(1),
        nn.ReflectionPad2d(1),
        nn.ReplicationPad2d(1),
        nn.ConstantPad2d(1, 0.5),
        nn.Dropout2d(0.1),
        nn.LPPool2d(2, 2),
        nn.AdaptiveMaxPool2d(2),
        nn.ChannelShuffle(1),
        nn.Softmax2d(),
        nn.LocalResponseNorm(2),
        nn.AlphaDropout(0.1),
        nn.Hardshrink(),
        nn.Softshrink(),
        nn.Tanhshrink(),
        nn.Threshold(0.1, 0.0),
        nn.CELU(),
        nn.SELU(),
        nn.Hardsigmoid(),
        nn.LogSigmoid(),
        nn.ELU(),
    )


def zoo():
    """(name, module, example inputs, dynamic shapes for export or None) for every layer family."""
    batch = Dim("batch", min=1, max=1024)
    yield "mlp", nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), (torch.rand(2, 4),), None
    yield "mlp-dynamic-batch", nn.Sequential(nn.Linear(4, 8), nn.Tanh()), (torch.rand(2, 4),), ({0: batch},)
    yield "conv2d", _conv2d_stack(), (torch.rand(2, 3, 16, 16),), ({0: batch},)
    yield (
        "conv1d",
        nn.Sequential(
            nn.Conv1d(3, 4, 3),
            nn.BatchNorm1d(4),
            nn.ELU(),
            nn.AvgPool1d(2),
            nn.MaxPool1d(2),
            nn.AdaptiveMaxPool1d(1),
            nn.Flatten(),
            nn.LayerNorm(4),
            nn.Tanh(),
        ),
        (torch.rand(2, 3, 16),),
        None,
    )
    yield (
        "conv3d",
        nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2), nn.ReLU(), nn.AvgPool3d(2), nn.Flatten()),
        (torch.rand(1, 1, 8, 8, 8),),
        None,
    )
    yield "image-layers", _image_layers(), (torch.rand(1, 3, 8, 8),), None
    yield "fold", nn.Sequential(nn.Unfold(2), nn.Fold((4, 4), 2)), (torch.rand(1, 2, 4, 4),), None
    yield (
        "embedding",
        nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2), nn.LogSoftmax(-1)),
        (torch.randint(0, 10, (2, 3)),),
        None,
    )
    yield "embedding-bag", nn.EmbeddingBag(10, 4, mode="mean"), (torch.randint(0, 10, (2, 3)),), None
    yield "bilinear", nn.Bilinear(4, 4, 2), (torch.rand(2, 4), torch.rand(2, 4)), None
    yield "rnn", Recurrent(nn.RNN(4, 5, batch_first=True)), (torch.rand(2, 3, 4),), None
    yield (
        "lstm",
        Recurrent(nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True)),
        (torch.rand(2, 3, 4),),
        None,
    )
    yield "gru", Recurrent(nn.GRU(4, 5, batch_first=True)), (torch.rand(2, 3, 4),), None
    yield "lstm-cell", nn.LSTMCell(4, 5), (torch.rand(2, 4),), None
    yield "gru-cell", nn.GRUCell(4, 5), (torch.rand(2, 4),), None
    yield "rms-norm", nn.Sequential(nn.RMSNorm(4), nn.GLU(-1)), (torch.rand(2, 4),), None
    yield (
        "multihead-attention",
        nn.MultiheadAttention(8, 2, batch_first=True),
        (torch.rand(2, 3, 8), torch.rand(2, 3, 8), torch.rand(2, 3, 8)),
        None,
    )
    yield (
        "transformer-encoder",
        nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2, enable_nested_tensor=False),
        (torch.rand(2, 3, 8),),
        None,
    )
    yield (
        "transformer-decoder-layer",
        nn.TransformerDecoderLayer(8, 2, 16, batch_first=True),
        (torch.rand(2, 3, 8), torch.rand(2, 3, 8)),
        None,
    )
    yield "elementwise", Elementwise(), (torch.rand(3, 4),), None
    yield "reductions", Reductions(), (torch.rand(3, 4),), None
    yield "shapes", Shapes(), (torch.rand(3, 4),), None
    yield "shapes-dynamic", Shapes(), (torch.rand(3, 4),), ({0: batch},)
    yield "linear-algebra", LinearAlgebra(), (torch.rand(3, 4),), None
    yield "losses", Losses(), (torch.rand(3, 4),), None
    yield "unflatten", Unflattened(), (torch.rand(3, 4),), None


def script_only():
    """Modules whose Python control flow torch.export cannot trace (it depends on data)."""
    yield "control-flow", ControlFlow(), (torch.rand(3, 4),), None


def export_only():
    """Programs that only torch.export can express (higher-order control flow)."""
    yield "cond", Branch(), (torch.rand(3),), None
    yield "while-loop", CountDown(), (torch.rand(3),), None
