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
    "Estimator",
    "mahalanobis",
    "entropy",
    "marginal",
    "condition",
    "sample",
]


def test_all_names_import():
    for name in jg.__all__:
        assert getattr(jg, name) is not None, name
    assert set(CONTRACT) <= set(jg.__all__)
    assert callable(jg.streams.random_truth) and callable(jg.streams.sample)
    assert jg.sample is jg.streams.sample  # one sampling implementation
    from jaxgauss.sklearn import OnlineEmpiricalCovariance  # the optional extra

    assert callable(OnlineEmpiricalCovariance().fit)


def test_submodules_have_all():
    for mod in ["gaussian", "parameterizations", "streams", "_fit", "_sweep", "estimators"]:
        m = importlib.import_module(f"jaxgauss.{mod}")
        for name in m.__all__:
            assert hasattr(m, name), (mod, name)


def test_functions_do_not_shadow_public_modules():
    # jg.fit and jg.sweep are the functions; their modules are private, and the
    # building blocks a user needs for their own lax.scan are exported at the top.
    assert callable(jg.fit) and callable(jg.sweep)
    for name in ["FitCarry", "init_carry", "scan_batches", "default_block_rows"]:
        assert name in jg.__all__
    assert jg.scan_batches.__module__ == "jaxgauss._engine"


def test_readme_layout_matches_the_tree():
    """Every module of the package is named in the README's layout table, and every
    module the table names exists (the table says where each thing lives)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    table = readme.split("<!-- layout:begin -->")[1].split("<!-- layout:end -->")[0]
    named = set(re.findall(r"`(?:jaxgauss/)?(?:estimators/)?(\w+\.py)`", table))
    modules = {
        p.name
        for p in (root / "jaxgauss").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert named == modules, (sorted(modules - named), sorted(named - modules))
