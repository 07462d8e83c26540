"""The public API: everything in __all__ imports, and the contract's names exist."""

import importlib

import jaxgauss as jg

CONTRACT = [
    "Gaussian",
    "log_likelihood",
    "cookbook_gradients",
    "kl_divergence",
    "mle",
    "fit",
    "gradient_ascent",
    "natural_gradient",
    "welford",
    "exponential",
    "averaged",
    "merge",
    "fisher_preconditioner",
    "Estimator",
    "mahalanobis",
    "entropy",
    "marginal",
    "condition",
    "oas",
    "ledoit_wolf",
    "student_t",
    "gaussian_mixture",
    "sweep",
]

# The documented public modules: the top level and the named submodules that hold the
# building blocks (the extension surface). Each object has one public name among them.
PUBLIC_MODULES = [
    "jaxgauss",
    "jaxgauss.checkpoint",
    "jaxgauss.engine",
    "jaxgauss.estimators",
    "jaxgauss.gaussian",
    "jaxgauss.methods",
    "jaxgauss.normalization",
    "jaxgauss.parameterizations",
    "jaxgauss.preconditioners",
    "jaxgauss.schedules",
    "jaxgauss.streams",
    "jaxgauss.sklearn",
    "jaxgauss.plot",
]


def public_names() -> dict[str, object]:
    """Every documented public name ("module.name") and its object."""
    names = {}
    for module in PUBLIC_MODULES:
        m = importlib.import_module(module)
        for name in m.__all__:
            names[f"{module}.{name}"] = getattr(m, name)
    return names


def test_all_names_import():
    for name in jg.__all__:
        assert getattr(jg, name) is not None, name
    assert set(CONTRACT) <= set(jg.__all__)
    assert callable(jg.streams.random_truth) and callable(jg.streams.sample)
    from jaxgauss.sklearn import OnlineEmpiricalCovariance  # the optional extra

    assert callable(OnlineEmpiricalCovariance().fit)


def test_the_top_level_is_small():
    """What a user calls and the types they receive (issue 26: at most 55 names,
    counting those the ML-pipeline and latent-model issues add)."""
    assert len(jg.__all__) <= 55, len(jg.__all__)
    assert len(set(jg.__all__)) == len(jg.__all__)


def test_one_public_name_per_object():
    """No object is exported twice (jg.sample was jg.streams.sample): the API reference
    documents each once, and a user finds one spelling in examples."""
    seen: dict[int, str] = {}
    for qualified, obj in public_names().items():
        if isinstance(obj, (int, float, str, tuple)):  # constants may coincide
            continue
        assert id(obj) not in seen, (qualified, seen.get(id(obj)))
        seen[id(obj)] = qualified


def test_public_submodules_are_attributes():
    for module in PUBLIC_MODULES[1:]:
        if module in ("jaxgauss.sklearn", "jaxgauss.plot"):  # optional extras
            continue
        assert getattr(jg, module.split(".")[1]) is importlib.import_module(module)


def test_the_engine_is_the_extension_surface():
    # jg.fit and jg.sweep are the functions; their modules are private, and the
    # building blocks for your own lax.scan are jaxgauss.engine's.
    assert callable(jg.fit) and callable(jg.sweep)
    assert jg.engine.scan_batches.__module__ == "jaxgauss._engine"
    for name in ["FitCarry", "init_carry", "scan_batches", "default_block_rows"]:
        assert name in jg.engine.__all__ and name not in jg.__all__


def test_layout_table_matches_the_tree():
    """Every module of the package is named in the layout table of docs/development.md
    ("Where things live"), and every module the table names exists (the table says
    where each thing lives)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    page = (root / "docs" / "development.md").read_text()
    table = page.split("<!-- layout:begin -->")[1].split("<!-- layout:end -->")[0]
    named = set(re.findall(r"`(?:jaxgauss/)?(?:estimators/)?(\w+\.py)`", table))
    modules = {
        p.name
        for p in (root / "jaxgauss").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert named == modules, (sorted(modules - named), sorted(named - modules))
