from . import mobilenet_mafc, mobilenet_mrap
