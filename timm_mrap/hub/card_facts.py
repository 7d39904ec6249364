""" What each model card says about its architecture: the backbone, the attention, where it sits, the papers

A new model needs a ``CARD_FACTS`` entry (and a ``BACKBONES`` one for a new family), then ``python -m timm_mrap.hub
cards hf_cards``."""
from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = ['Attention', 'Backbone', 'CardFacts', 'ATTENTIONS', 'BACKBONES', 'CARD_FACTS', 'MRAP_PAPER', 'MAF_PAPER']

MRAP_PAPER = ('Multiple channel-spatial residual attentive patterns for lightweight networks in image classification '
              '(Nguyen et al., Machine Learning, submitted 2025)')
MAF_PAPER = ('Accumulating global channel-wise patterns via deformed-bottleneck recalibration for image '
             'classification (Pattern Analysis and Applications 28, 2025)')


@dataclass(frozen=True)
class Attention:
    """An attention module as the cards describe it."""
    name: str  # as written in text, e.g. 'MRAP'
    about: str  # follows 'Attention: '
    papers: Tuple[str, ...]
    original: str  # the authors' code


@dataclass(frozen=True)
class Backbone:
    """A backbone family as the cards describe it."""
    about: str  # 'A MobileNetV2 image classifier (...)'
    paper: str


@dataclass(frozen=True)
class CardFacts:
    """The architecture facts of one registered model."""
    backbone: str  # a BACKBONES key
    attention: str  # an ATTENTIONS key
    placement: str  # follows 'with <attention> '
    topology: str = "the reference topology of the authors' code, built on timm's own MobileNet builder"


ATTENTIONS: Dict[str, Attention] = {
    'mrap': Attention(
        name='MRAP',
        about='MRAP (multiple channel-spatial residual attentive patterns: top-n sorted average / standard-deviation '
              'patterns through one perceptron, a 7x7 spatial gate, residual sigmoid terms).',
        papers=(MRAP_PAPER,),
        original='https://github.com/nttbdrk25/MRAP',
    ),
    'mafc': Attention(
        name='MAFC',
        about='MAFC (the MAF channel gate on concatenated average / standard-deviation patterns, then a 7x7 spatial '
              'gate), the predecessor of MRAP.',
        papers=(MRAP_PAPER, MAF_PAPER),
        original='https://github.com/nttbdrk25/MAFAttention',
    ),
}

BACKBONES: Dict[str, Backbone] = {
    'mobilenetv1': Backbone(
        about='A MobileNetV1 image classifier (13 depthwise-separable units, ReLU, an identity skip where a unit keeps '
              'its shape (as in the reference), no conv head)',
        paper='MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications: '
              'https://arxiv.org/abs/1704.04861',
    ),
    'mobilenetv2': Backbone(
        about='A MobileNetV2 image classifier (17 inverted residual bottlenecks, ReLU6, the first with a 1x1 '
              'expansion, conv head to 1280)',
        paper='MobileNetV2: Inverted Residuals and Linear Bottlenecks: https://arxiv.org/abs/1801.04381',
    ),
    'mobilenetv3_large': Backbone(
        about='A MobileNetV3-Large image classifier (hard-swish, the first unit with a 1x1 expansion, heads 960 and '
              '1280, the last without BN or bias)',
        paper='Searching for MobileNetV3: https://arxiv.org/abs/1905.02244',
    ),
    'mobilenetv3_small': Backbone(
        about='A MobileNetV3-Small image classifier (hard-swish after the second stage, the first unit an inverted '
              'residual with a 1x1 expansion, heads 576 and 1024, the last without BN or bias)',
        paper='Searching for MobileNetV3: https://arxiv.org/abs/1905.02244',
    ),
}

CARD_FACTS: Dict[str, CardFacts] = {
    'mobilenetv1_mrap': CardFacts('mobilenetv1', 'mrap', 'after the depthwise convolution of all 13 units'),
    'mobilenetv2_mrap': CardFacts(
        'mobilenetv2', 'mrap', 'after the depthwise convolution of all 17 bottlenecks, on the expanded channels'),
    'mobilenetv3_mrap': CardFacts(
        'mobilenetv3_large', 'mrap',
        'in place of squeeze-and-excitation in the 8 units that have SE, on the expanded channels'),
    'mobilenetv3_small_mrap': CardFacts(
        'mobilenetv3_small', 'mrap',
        'in place of squeeze-and-excitation in the 9 units that have SE, on the expanded channels',
        topology="built on timm's own MobileNet builder the way the authors' code builds MobileNetV3-Large (their "
                 "small variant does not run)"),
    'mobilenetv1_mafc': CardFacts('mobilenetv1', 'mafc', 'after the pointwise convolution of all 13 units'),
    'mobilenetv2_mafc': CardFacts(
        'mobilenetv2', 'mafc', 'after the projection convolution of all 17 bottlenecks, before the residual add'),
    'mobilenetv3_mafc': CardFacts(
        'mobilenetv3_large', 'mafc', 'after the projection convolution of the 8 units where MobileNetV3-Large has SE'),
}
