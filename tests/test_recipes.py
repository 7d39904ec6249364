"""Training recipes: every YAML loads, uses only real timm train.py flags, and says what the paper says."""
import configparser
from pathlib import Path

import pytest
import yaml

from timm_mrap.errors import InputError
from timm_mrap.training.recipes import list_recipes, read_config, recipe_path

ROOT = Path(__file__).resolve().parents[1]

# dest names of timm 1.0.x train.py's flags (the keys a --config YAML file may set)
TIMM_TRAIN_FLAGS = set('''
data data_dir dataset train_split val_split train_num_samples val_num_samples dataset_download class_map
input_img_mode input_key target_key dataset_trust_remote_code model pretrained pretrained_path initial_checkpoint
resume no_resume_opt num_classes gp img_size in_chans input_size crop_pct mean std interpolation batch_size
validation_batch_size channels_last fuser grad_accum_steps grad_checkpointing fast_norm model_kwargs head_init_scale
head_init_bias torchcompile_mode torchscript torchcompile device amp amp_dtype amp_impl model_dtype no_ddp_bb
synchronize_step local_rank device_modules opt opt_eps opt_betas momentum weight_decay clip_grad clip_mode
layer_decay opt_kwargs sched sched_on_updates lr lr_base lr_base_size lr_base_scale lr_noise lr_noise_pct
lr_noise_std lr_cycle_mul lr_cycle_decay lr_cycle_limit lr_k_decay warmup_lr min_lr epochs epoch_repeats
start_epoch decay_milestones decay_epochs warmup_epochs warmup_prefix cooldown_epochs patience_epochs decay_rate
no_aug train_crop_mode scale ratio hflip vflip color_jitter color_jitter_prob grayscale_prob gaussian_blur_prob aa
aug_repeats aug_splits jsd_loss bce_loss bce_sum bce_target_thresh bce_pos_weight reprob remode recount resplit
mixup cutmix cutmix_minmax mixup_prob mixup_switch_prob mixup_mode mixup_off_epoch smoothing train_interpolation
drop drop_connect drop_path drop_block bn_momentum bn_eps sync_bn dist_bn split_bn model_ema model_ema_force_cpu
model_ema_decay model_ema_warmup seed worker_seeding log_interval recovery_interval checkpoint_hist workers
save_images pin_mem no_prefetcher output experiment eval_metric tta use_multi_epochs_loader log_wandb
wandb_project wandb_tags wandb_resume_id
'''.split())

RECIPES = ['digits_demo', 'mobilenet_mrap_modern', 'rein100_paper', 'stanford_dogs_paper']


def _load(name):
    return yaml.safe_load(recipe_path(name).read_text())


def test_recipes_listed_and_packaged():
    assert list_recipes() == RECIPES
    assert recipe_path('rein100_paper.yaml') == recipe_path('rein100_paper')
    with pytest.raises(InputError, match='rein100_paper'):
        recipe_path('imagenet_paper')
    # setup.cfg ships the recipes and class lists with the package
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    patterns = [p.strip() for p in cfg['options.package_data']['timm_mrap'].split(',')]
    package = ROOT / 'timm_mrap'
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    assert {recipe_path(n) for n in RECIPES} <= shipped
    assert {package / 'training' / 'class_lists' / f for f in ('rein100_classes.txt', 'cmc_imagenet100_classes.txt')
            } <= shipped


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_keys_are_train_flags(name):
    cfg = _load(name)
    assert isinstance(cfg, dict) and cfg
    assert not set(cfg) - TIMM_TRAIN_FLAGS, f'not timm train.py flags: {sorted(set(cfg) - TIMM_TRAIN_FLAGS)}'
    # the built-in trainer takes the same file: every key is one of its flags and becomes its default
    from timm_mrap.training.builtin.args import build_script_parser, parse_script_args
    builtin = {a.dest for a in build_script_parser('train')._actions}
    assert not set(cfg) - builtin, f'unknown to the built-in trainer: {sorted(set(cfg) - builtin)}'
    args, _ = parse_script_args('train', ['--config', str(recipe_path(name)), '--data-dir', 'unused', '--epochs', '3'])
    assert args.epochs == 3  # the command line wins over the file
    for key, value in cfg.items():
        if key != 'epochs':
            assert getattr(args, key) == value, key


def test_paper_recipes_follow_the_spec():
    for name, batch, epochs, milestones, classes in (('rein100_paper', 256, 100, [30, 60, 90], 100),
                                                     ('stanford_dogs_paper', 64, 200, [100, 150, 180], 120)):
        cfg = _load(name)
        assert (cfg['opt'], cfg['lr'], cfg['momentum'], cfg['weight_decay']) == ('sgd', 0.1, 0.9, 1e-4)
        assert (cfg['batch_size'], cfg['epochs'], cfg['num_classes']) == (batch, epochs, classes)
        assert (cfg['sched'], cfg['decay_milestones'], cfg['decay_rate']) == ('multistep', milestones, 0.1)
        assert cfg['warmup_epochs'] == 0 and cfg['opt_kwargs'] == {'filter_bias_and_bn': False}  # wd on everything
        assert cfg['smoothing'] == cfg['mixup'] == cfg['cutmix'] == cfg['reprob'] == 0.
        assert cfg['img_size'] == 224 and cfg['crop_pct'] == 0.875 and cfg['model_ema'] is False
    assert _load('stanford_dogs_paper')['color_jitter'] == [0.4, 0., 0.]  # brightness only
    assert _load('stanford_dogs_paper')['val_split'] == 'test'


def test_modern_recipe_has_the_modern_pieces():
    cfg = _load('mobilenet_mrap_modern')
    assert cfg['opt'] in ('lamb', 'adamw') and cfg['sched'] == 'cosine' and cfg['warmup_epochs'] > 0
    assert cfg['aa'].startswith('rand-') and cfg['mixup'] > 0 and cfg['cutmix'] > 0 and cfg['reprob'] > 0
    assert cfg['model_ema'] is True and 0 < cfg['smoothing'] < 0.5 and 'lr' not in cfg and cfg['lr_base'] > 0


def test_read_config_names_the_problem(tmp_path):
    (tmp_path / 'list.yaml').write_text('- 1\n')
    with pytest.raises(InputError, match='mapping'):
        read_config(str(tmp_path / 'list.yaml'))
    with pytest.raises(InputError, match='missing.yaml'):
        read_config(str(tmp_path / 'missing.yaml'))
    (tmp_path / 'dash.yaml').write_text('batch-size: 8\n')
    assert read_config(str(tmp_path / 'dash.yaml')) == {'batch_size': 8}
