"""The official-layout fixture writers now live in the package
(:mod:`aanbench_plugins.datasets.fixtures`, also behind ``aanbench datasets
make-fixture``); re-exported here for the tests that import them from here."""

from aanbench_plugins.datasets.fixtures import (  # noqa: F401
    COGNIMUSE_TOKENS,
    COGNIMUSE_YEARS,
    FPS,
    HEIGHT,
    RATE,
    WIDTH,
    CognimuseFixture,
    Eimt16Fixture,
    default_stream,
    make_fixture,
    tiny_clip,
    write_cognimuse,
    write_cognimuse_fixture,
    write_dat,
    write_eimt16,
    write_eimt16_fixture,
)
