""" Where MRAP looks: its spatial weights overlaid on the image, and its channel weights, for chosen blocks

Forward pre-hooks on the MRAP modules capture each input; ``MRAP.spatial_weight`` / ``MRAP.channel_weight`` then
give ``w_s`` (B x 1 x H x W) and ``w_c`` (B x C) in float32. The command: ``docs/deployment.md``.
"""
import argparse
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_model
from .deploy import add_model_arguments, check_input, output_path
from .errors import TimmMrapError
from .layers import MRAP

__all__ = ['AttentionMap', 'mrap_modules', 'attention_maps', 'load_image', 'save_overlay_png', 'save_channel_png']

_DPI = 100


class AttentionMap(NamedTuple):
    """MRAP weights of one module for a batch: ``spatial`` B x 1 x H x W and ``channel`` B x C (float32, CPU)."""
    spatial: torch.Tensor
    channel: torch.Tensor


def mrap_modules(model: nn.Module) -> Dict[str, MRAP]:
    """The model's MRAP modules by qualified name (``blocks.2.0.se``), in forward order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MRAP)}


def _select(model: nn.Module, blocks: Optional[Sequence[str]]) -> Dict[str, MRAP]:
    modules = mrap_modules(model)
    if not modules:
        raise ValueError(f'{type(model).__name__} has no MRAP modules; attention maps need attn="mrap".')
    if not blocks:  # one per stage: the last MRAP of each top-level stage
        last = {name.rsplit('.', 2)[0]: name for name in modules}
        return {name: modules[name] for name in last.values()}
    selected = {}
    for block in blocks:
        matches = [n for n in modules if n == block or n.startswith(block + '.')]
        if not matches:
            raise ValueError(f'No MRAP module named {block!r}; choose from {list(modules)} (or a block prefix).')
        selected.update({n: modules[n] for n in matches})
    return selected


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor,
                   blocks: Optional[Sequence[str]] = None) -> Dict[str, AttentionMap]:
    """Run ``model`` (put in eval mode) on the normalised ``images`` and return ``{module name: AttentionMap}`` of
    the chosen MRAP modules, in forward order.

    Args:
        blocks: MRAP module names or block prefixes (``blocks.2``); default: the last MRAP of each stage.
    """
    check_input(model, images)
    selected = _select(model, blocks)
    maps: Dict[str, AttentionMap] = {}

    def capture(name: str, module: MRAP, x: torch.Tensor) -> None:
        # computed in the hook: later in-place ops of the network cannot alter the input it saw
        x = x.float()
        maps[name] = AttentionMap(module.spatial_weight(x).cpu(), module.channel_weight(x).cpu())

    handles = [m.register_forward_pre_hook(lambda mod, args, name=name: capture(name, mod, args[0]))
               for name, m in selected.items()]
    model.eval()
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    return {name: maps[name] for name in selected}


def load_image(path: str, model: nn.Module, img_size: Optional[int] = None):
    """The image at ``path`` through the model's eval transform (timm's data config): the normalised 1 x C x H x W
    batch, and the same crop as an H x W x 3 float array in [0, 1] for drawing."""
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config
    data_config = resolve_model_data_config(model, args={'img_size': img_size})
    image = Image.open(path).convert('RGB')  # FileNotFoundError names a missing file
    transform = create_transform(**data_config, is_training=False)
    batch = transform(image).unsqueeze(0)
    mean, std = (torch.tensor(data_config[k]).view(-1, 1, 1) for k in ('mean', 'std'))
    return batch, (batch[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def save_overlay_png(display, maps: Dict[str, AttentionMap], path: str, panel_size: int = 256, alpha: float = 0.55,
                     cmap: str = 'jet') -> Path:
    """Save one row of panels: the image, then each module's spatial weight (image 0 of the batch) over it; the PNG
    is exactly ``panel_size * (1 + len(maps))`` x ``panel_size`` pixels (width x height)."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global figure state
    height, width = display.shape[:2]
    num = 1 + len(maps)
    fig = Figure(figsize=(panel_size * num / _DPI, panel_size / _DPI), dpi=_DPI)
    for i, (name, amap) in enumerate([('image', None)] + list(maps.items())):
        ax = fig.add_axes((i / num, 0., 1. / num, 0.88))  # the top 12 % for the title
        ax.imshow(display)
        if amap is not None:
            weight = F.interpolate(amap.spatial[:1], size=(height, width), mode='bilinear', align_corners=False)
            ax.imshow(weight[0, 0].numpy(), cmap=cmap, alpha=alpha)
            h, w = amap.spatial.shape[-2:]
            name = f'{name} ({h}x{w})'
        ax.set_title(name, fontsize=7, pad=2)
        ax.axis('off')
    return _save(fig, path)


def save_channel_png(maps: Dict[str, AttentionMap], path: str, width: int = 768, row_height: int = 160) -> Path:
    """Save the channel weights ``w_c`` (image 0) as one bar plot per module, stacked; ``width`` x rows px."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width / _DPI, row_height * len(maps) / _DPI), dpi=_DPI)
    axes = fig.subplots(len(maps), 1, squeeze=False)
    for ax, (name, amap) in zip(axes[:, 0], maps.items()):
        weights = amap.channel[0].numpy()
        ax.bar(range(len(weights)), weights, width=1.0, color='tab:blue')
        ax.set_xlim(-0.5, len(weights) - 0.5)
        ax.set_ylabel('w_c', fontsize=7)
        ax.set_title(f'{name}: {len(weights)} channels', fontsize=7, pad=2)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], prog='python -m timm_mrap.attention_maps')
    add_model_arguments(parser)
    parser.add_argument('--image', required=True, help='image file (any format PIL reads)')
    parser.add_argument('--img-size', type=int, default=None, help='input size (default: the model config\'s)')
    parser.add_argument('--blocks', nargs='*', default=None,
                        help='MRAP module names or prefixes, e.g. blocks.2.0.se blocks.4 (default: last of each stage)')
    parser.add_argument('--out', required=True, help='PNG of the spatial weights over the image')
    parser.add_argument('--channels-out', default=None, help='PNG of the channel weights (optional)')
    parser.add_argument('--panel-size', type=int, default=256, help='pixels per panel of --out')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random init when no weights are loaded')
    parser.add_argument('--overwrite', action='store_true', help='replace existing output files')
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        for out in filter(None, (args.out, args.channels_out)):
            output_path(out, args.overwrite)
        model = load_model(args.model, args.checkpoint, args.pretrained, args.num_classes)
        batch, display = load_image(args.image, model, args.img_size)
        maps = attention_maps(model, batch, args.blocks)
    except (TimmMrapError, FileExistsError, FileNotFoundError, ValueError) as e:
        parser.exit(2, f'error: {e}\n')
    weights = 'random init (seed %d)' % args.seed if not (args.checkpoint or args.pretrained) else 'loaded weights'
    print(f'{args.model} ({weights}), input {tuple(batch.shape)}')
    for name, amap in maps.items():
        s, c = amap.spatial, amap.channel
        print(f'{name}: w_s {tuple(s.shape[-2:])} in [{s.min():.3g}, {s.max():.3g}], '
              f'w_c {c.shape[1]} ch in [{c.min():.3g}, {c.max():.3g}]')
    print(f'Wrote {save_overlay_png(display, maps, args.out, args.panel_size)}')
    if args.channels_out:
        print(f'Wrote {save_channel_png(maps, args.channels_out)}')


if __name__ == '__main__':
    main()
