"""The keyword arguments a class's constructor takes: what a config section may set."""

import inspect

#: the default of an argument that has none
REQUIRED = inspect.Parameter.empty


def constructor_args(cls, exclude=()) -> dict:
    """Argument name -> default (``REQUIRED`` when it has none) of ``cls.__init__``, in
    order, without ``self``, ``*args``, ``**kwargs`` and the names in ``exclude``."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind in named and name != "self" and name not in exclude
    }


def takes_kwargs(cls) -> bool:
    """Whether ``cls.__init__`` takes ``**kwargs``."""
    params = inspect.signature(cls.__init__).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
