"""Config (SPEC 1): presets, TOML loading, validation messages naming field and limit."""

import pytest

from exion import PRESETS, Config, ConfigError, get_config, load_config


def test_presets_match_spec_table():
    toy, e16 = PRESETS["toy"], PRESETS["exion16"]
    assert (toy.rows, toy.cols, toy.lanes, toy.width, toy.acc_width, toy.merge_ways) == \
        (8, 3, 4, 12, 32, 2)
    assert (toy.imem_banks, toy.imem_depth, toy.wmem_banks, toy.wmem_depth,
            toy.omem_banks, toy.omem_depth) == (8, 256, 3, 1024, 8, 64)
    assert (e16.rows, e16.cols, e16.lanes, e16.width, e16.acc_width, e16.merge_ways) == \
        (16, 16, 16, 12, 36, 4)
    assert (e16.imem_banks, e16.imem_depth, e16.wmem_banks, e16.wmem_depth,
            e16.omem_banks, e16.omem_depth) == (16, 1024, 16, 8192, 16, 384)
    # seed: IMEM 1.5 KB, WMEM 12 KB per bank at 12-bit elements
    assert e16.imem_depth * e16.width // 8 == 1536
    assert e16.wmem_depth * e16.width // 8 == 12 * 1024


def test_accumulator_rule_boundary():
    # K * 2^(2W-2) < 2^(A-1): W=12, A=32 -> K <= 511 (511 * 2^22 < 2^31 <= 512 * 2^22)
    cfg = PRESETS["toy"].replace(k_max=511)
    assert cfg.k_max == 511 and cfg.k_max_limit == 511
    with pytest.raises(ConfigError, match=r"k_max = 512 is invalid: accumulator too narrow.*"
                                          r"k_max <= 511"):
        PRESETS["toy"].replace(k_max=512)


@pytest.mark.parametrize("field,value,message", [
    ("rows", 0, r"rows = 0 is invalid: must be >= 1"),
    ("cols", -2, r"cols = -2 is invalid: must be >= 1"),
    ("width", 3, r"width = 3 is invalid: must be in 4\.\.16"),
    ("width", 17, r"width = 17 is invalid: must be in 4\.\.16"),
    ("merge_ways", 9, r"merge_ways = 9 is invalid: must be in 1\.\.8"),
    ("merge_ways", 0, r"merge_ways = 0 is invalid"),
    ("imem_depth", 6, r"imem_depth = 6 is invalid: must be a positive multiple of lanes = 4"),
    ("omem_depth", 2, r"omem_depth = 2 is invalid: must hold one pass's columns: >= cols = 3"),
    ("acc_width", 20, r"acc_width = 20 is invalid: must be in 24\.\.64"),
    ("lod_terms", 3, r"lod_terms = 3 is invalid: must be 1 or 2"),
    ("rows", 2.5, r"rows = 2\.5 is invalid: must be an integer"),
    ("dpu_pipe_mul", 1, r"dpu_pipe_mul = 1 is invalid: must be true or false"),
    ("dpu_pipe_in", "yes", r"dpu_pipe_in = 'yes' is invalid: must be true or false"),
    ("dpu_mult", "dsp48", r"dpu_mult = 'dsp48' is invalid: must be one of 'infer', 'ecp5'"),
    ("sdue_pipe_isw", 1, r"sdue_pipe_isw = 1 is invalid: must be true or false"),
])
def test_invalid_fields_named(field, value, message):
    with pytest.raises(ConfigError, match=message):
        PRESETS["toy"].replace(**{field: value})


def test_run_time_merge_ways_one_check():
    """m of a run: 1..cfg.merge_ways (the weight buses built), one message everywhere."""
    toy = PRESETS["toy"]
    assert toy.check_merge_ways() == 2 and toy.check_merge_ways(1) == 1
    for bad in (0, 3, 2.0, True, "2"):
        with pytest.raises(ConfigError, match=rf"merge_ways = {bad!r} is invalid for config "
                                              r"'toy': must be an integer in 1\.\.2"):
            toy.check_merge_ways(bad)


def test_k_cap_and_k_splits_follow_the_run_ways():
    # one IMEM side 256, WMEM 1024 / m: toy is IMEM-bound for m = 1, 2
    toy = PRESETS["toy"]
    assert toy.k_cap(1) == toy.k_cap(2) == toy.k_cap() == 256
    wide = toy.replace(merge_ways=8)              # WMEM 1024 / 8 = 128 for m = 8
    assert (wide.k_cap(8), wide.k_cap(4), wide.k_cap(1)) == (128, 256, 256)
    assert wide.k_splits(75, 8) == [25, 25, 25]   # 32-beat cap: 3 balanced splits
    assert wide.k_splits(75, 1) == [38, 37]       # 64-beat cap: 2 splits, first one longer
    assert wide.k_splits(0, 1) == [1]             # an all-zero input still streams one beat


def test_derived_values_listed():
    toy = PRESETS["toy"]
    d = toy.derived()
    assert d["sdue_fixed_cycles"] == toy.cols + toy.dpu_latency + toy.sdue_in_latency + \
        toy.sdue_drain_latency == 11
    assert (d["cau_cols_per_cycle"], d["cau_merge_lanes"]) == (8, 2)
    assert (d["epre_pipe"], d["epre_sel_fixed"], d["epre_run_fixed"]) == (4, 5, 1)
    assert d["k_cap"] == 256
    assert PRESETS["exion16"].cau_merge_lanes == 3      # 4 // 2 + 1
    assert toy.replace(merge_ways=8).cau_merge_lanes == 3   # capped at C = 3


def test_unknown_field_refused():
    with pytest.raises(ConfigError, match="unknown config field.*colz"):
        PRESETS["toy"].replace(colz=4)


def test_awkward_configs_accepted():
    # non-square, non-power-of-two, m = 1 and m = R, single DPU
    Config(name="odd", rows=5, cols=7, lanes=3, width=8, acc_width=24, merge_ways=5,
           imem_depth=9, wmem_depth=15, omem_depth=7, k_max=3)
    Config(name="one", rows=1, cols=1, lanes=1, width=4, acc_width=8, merge_ways=1,
           imem_depth=1, wmem_depth=1, omem_depth=1, k_max=1)


def test_toml_with_base(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('base = "exion16"\nmerge_ways = 2\n')
    cfg = load_config(p)
    assert cfg.name == "mine" and cfg.merge_ways == 2 and cfg.rows == 16
    assert cfg.hash != PRESETS["exion16"].hash
    assert get_config(str(p)) == cfg


def test_toml_full(tmp_path):
    p = tmp_path / "small.toml"
    p.write_text('name = "small"\nrows = 4\ncols = 2\nlanes = 2\nimem_depth = 16\n'
                 'wmem_depth = 32\nomem_depth = 8\nk_max = 16\n')
    cfg = load_config(p)
    assert (cfg.rows, cfg.cols, cfg.lanes, cfg.name) == (4, 2, 2, "small")


@pytest.mark.parametrize("text,message", [
    ('rows = 0\n', r"missing field\(s\) cols, lanes"),
    ('base = "toy"\nrows = 0\n', r"bad\.toml.*rows = 0 is invalid: must be >= 1"),
    ('base = "toy"\nmerge_ways = 99\n', r"merge_ways = 99 is invalid: must be in 1\.\.8"),
    ('base = "huge"\n', r"base = 'huge' is not a preset"),
    ('base = ["toy"]\n', r"base = \['toy'\] is not a preset"),
    ('base = "toy"\nbanana = 1\n', r"unknown field\(s\) banana"),
    ('rows = [1, 2]\n', r"field rows must be a single value"),
    ('rows = \n', r"is not valid TOML"),
])
def test_bad_toml_one_line_errors(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(p)
    assert "\n" not in str(e.value)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="unknown config 'toyy'"):
        get_config("toyy")


def test_frozen():
    with pytest.raises(AttributeError):
        PRESETS["toy"].rows = 4


def test_sdue_pipe_isw_needs_sdue_pipe_and_adds_a_cycle():
    toy = PRESETS["toy"]
    with pytest.raises(ConfigError, match=r"sdue_pipe_isw = True is invalid: needs "
                                          r"sdue_pipe = true"):
        toy.replace(sdue_pipe=False, sdue_pipe_isw=True)
    assert toy.replace(sdue_pipe_isw=True).sdue_in_latency == toy.sdue_in_latency + 1
