"""Run inside the grading kernel, before any student code (``exec_files`` of the kernel).

It records what the tests rely on: the functions of ``builtins``, ``math``, ``numpy``, ``torch``
(and ``torch.Tensor``, ``torch.nn.functional``, ``torch.testing``) and ``tfcourse.checks``;
IPython's input and AST transformers and its event callbacks; the trace, profile and display
hooks; the import machinery; the kernel's execution methods. Before and after each
test cell the executor calls :func:`check`, which puts back whatever differs and reports it by
raising ``GuardReport`` with the executor's nonce and the list of findings. A kernel that does not
answer this way (its execution was hooked) is itself a finding.

Student code runs in this same process, so a determined submission can still defeat this; the
executor flags what it sees, and the reading of the source on the trusted side
(:mod:`intake`) flags the constructs that such tampering needs.
"""

import builtins
import json
import math
import os
import sys
import threading


def _watched_modules():
    # torch._dynamo rebinds torch.manual_seed when it is first imported, which the first operation
    # on a tensor of the meta device does (hidden tests check devices there): imported before the
    # snapshot, that rebinding is part of the baseline and not taken for tampering.
    import numpy
    import numpy.testing
    import torch
    import torch._dynamo  # noqa: F401 - see above
    import torch.nn.functional
    import torch.testing

    import tfcourse.checks

    return {"builtins": builtins, "math": math, "numpy": numpy, "numpy.testing": numpy.testing,
            "torch": torch, "torch.Tensor": torch.Tensor, "torch.nn.Module": torch.nn.Module,
            "torch.nn.functional": torch.nn.functional, "torch.testing": torch.testing,
            "tfcourse.checks": tfcourse.checks}


def _hook_lists(shell):
    """The lists through which code can rewrite or intercept later cells and imports."""
    manager = shell.input_transformer_manager
    return {"input_transformers_cleanup": shell.input_transformers_cleanup,
            "input_transformers_post": shell.input_transformers_post,
            "ast_transformers": shell.ast_transformers,
            "manager.cleanup_transforms": manager.cleanup_transforms,
            "manager.line_transforms": manager.line_transforms,
            "manager.token_transformers": manager.token_transformers,
            "sys.meta_path": sys.meta_path, "sys.path_hooks": sys.path_hooks}


# names that IPython and ipykernel themselves rebind while running cells
_REBOUND = {"builtins": {"_", "__", "___", "input", "raw_input", "getpass"}}


def _snapshot():
    modules = _watched_modules()
    names = {key: {name: value for name, value in vars(obj).items()
                   if name not in _REBOUND.get(key, ())} for key, obj in modules.items()}
    shell = get_ipython()  # noqa: F821 (the kernel's shell)
    return {
        "modules": modules,
        "names": names,
        "sys.modules": {key: sys.modules.get(key) for key in modules if key in sys.modules},
        "lists": {name: list(target) for name, target in _hook_lists(shell).items()},
        "events": {name: list(callbacks) for name, callbacks in shell.events.callbacks.items()},
        "hooks": {"displayhook": sys.displayhook},
        "methods": {name: getattr(type(shell), name) for name in
                    ("run_cell", "run_cell_async", "run_ast_nodes", "run_code",
                     "transform_cell", "showtraceback", "_run_cell")},
        "kernel": {name: getattr(type(shell.kernel), name) for name in
                   ("do_execute", "execute_request")},
        "threads": threading.active_count(),
    }


class GuardReport(Exception):
    """The guard's answer: always raised, so that a kernel that swallows errors is noticed."""


def _restore_list(target, saved):
    if list(target) != saved:
        target[:] = saved
        return True
    return False


def check(nonce, baseline):
    shell = get_ipython()  # noqa: F821
    found = []
    for key, module in baseline["modules"].items():
        current, saved = vars(module), baseline["names"][key]
        for name, value in saved.items():
            if current.get(name, baseline) is not value:
                found.append(f"{key}.{name} was replaced")
                try:
                    setattr(module, name, value)
                except (AttributeError, TypeError):
                    pass
        if key in baseline["sys.modules"] and sys.modules.get(key) is not module:
            found.append(f"sys.modules[{key!r}] was replaced")
            sys.modules[key] = module
    for name, target in _hook_lists(shell).items():
        if _restore_list(target, baseline["lists"][name]):
            found.append(f"{name} was changed")
    for name, callbacks in shell.events.callbacks.items():
        if _restore_list(callbacks, baseline["events"].get(name, [])):
            found.append(f"IPython event callbacks for {name!r} were registered")
    if sys.gettrace() is not None or sys.getprofile() is not None:
        found.append("a trace or profile function was set")
        sys.settrace(None)
        sys.setprofile(None)
    hooks = baseline["hooks"]
    if sys.displayhook is not hooks["displayhook"]:
        found.append("sys.displayhook was replaced")
        sys.displayhook = hooks["displayhook"]
    for name, method in baseline["methods"].items():
        if getattr(type(shell), name) is not method or name in vars(shell):
            found.append(f"the shell's {name} was replaced")
            setattr(type(shell), name, method)
            vars(shell).pop(name, None)
    for name, method in baseline["kernel"].items():
        if getattr(type(shell.kernel), name) is not method or name in vars(shell.kernel):
            found.append(f"the kernel's {name} was replaced")
            setattr(type(shell.kernel), name, method)
            vars(shell.kernel).pop(name, None)
    if shell.custom_exceptions:
        found.append("a custom exception handler was set")
        shell.set_custom_exc((), None)
    if threading.active_count() > baseline["threads"]:
        found.append(f"{threading.active_count() - baseline['threads']} background thread(s)")
    others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
    if others:
        found.append(f"{len(others)} other process(es) running")
    raise GuardReport(json.dumps({"nonce": nonce, "findings": found}))


def _install():
    baseline = _snapshot()

    def guard(nonce):
        check(nonce, baseline)

    # the executor calls it by this name; a submission that replaces it is flagged by intake
    builtins.__grading_guard__ = guard
    baseline["names"]["builtins"]["__grading_guard__"] = guard


_install()
