"""The container: golden bytes, determinism, and damaged files always raising ContainerError."""
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import zoocodec
from support import run_cli
from zoocodec.container import FORMAT_VERSION, TRAILER_SIZE, Container
from zoocodec.errors import ContainerError
from zoocodec.header import Header, Source

EXPECTED = Path(__file__).parent / "expected" / "golden.sha256"


def golden_model() -> dict[str, torch.Tensor]:
    g = np.random.default_rng(42)
    return {
        "a.weight": torch.from_numpy(g.laplace(0, 0.02, (96, 128)).astype(np.float32)),
        "a.bias": torch.from_numpy(g.normal(0, 0.01, 96).astype(np.float32)),
        "b.weight": torch.from_numpy(g.normal(0, 0.05, (64, 96)).astype(np.float16)),
    }


def test_golden_bytes(tmp_path):
    """Format stability: the same model and spec give these exact bytes (GENERATE_EXPECTED=1 rewrites)."""
    digests = []
    for spec in ("uniform:bits=8", "uniform:step=0.002", "uniform:bits=4,per_tensor=true", "lossless",
                 "dq:step=0.004,coder=ctx", "prune:sparsity=0.6,then=uniform:step=0.002", "kmeans:k=8",
                 "lossless:coder=zstd"):
        out = tmp_path / "g.zc"
        zoocodec.compress(golden_model(), out, spec, min_size=1000)
        digests.append(f"{hashlib.sha256(out.read_bytes()).hexdigest()}  {spec}")
    if os.environ.get("GENERATE_EXPECTED"):
        EXPECTED.write_text("\n".join(digests) + "\n")
    assert EXPECTED.read_text().splitlines() == digests


def test_two_compressions_give_identical_bytes(tmp_path, mnist_path):
    zoocodec.compress(mnist_path, tmp_path / "1.zc", "uniform:bits=6")
    zoocodec.compress(mnist_path, tmp_path / "2.zc", "uniform:bits=6")
    assert (tmp_path / "1.zc").read_bytes() == (tmp_path / "2.zc").read_bytes()


@pytest.fixture(scope="module")
def real_zc(tmp_path_factory, mnist_path) -> bytes:
    out = tmp_path_factory.mktemp("zc") / "mnist.zc"
    zoocodec.compress(mnist_path, out, "uniform:bits=6", min_size=300)
    return out.read_bytes()


def damaged_files(data: bytes, cases: int, seed: int):
    g = np.random.default_rng(seed)
    for i in range(cases):
        if i % 3 == 0:
            yield f"truncated to {i}", data[: int(g.integers(0, len(data)))]
        else:
            b = bytearray(data)
            for pos in g.integers(0, len(b), int(g.integers(1, 4))):
                b[pos] ^= int(g.integers(1, 256))
            yield "flipped", bytes(b)


def check_damage(tmp_path, data: bytes, cases: int, seed: int):
    p = tmp_path / "bad.zc"
    for _what, bad in damaged_files(data, cases, seed):
        p.write_bytes(bad)
        with pytest.raises(ContainerError):
            zoocodec.decompress(p)
        # random access without the whole-file hash still catches it, or decodes exactly
        try:
            with zoocodec.Archive(p, verify=False) as a:
                for name in a.names():
                    a.read(name)
        except ContainerError:
            pass


def test_damaged_containers_raise_container_error(tmp_path, real_zc):
    check_damage(tmp_path, real_zc, 100, seed=0)


def test_damaged_containers_of_every_stream_kind(tmp_path, mnist_path):
    """dq levels under ctx, a pruning mask (flags) with kmeans inside, zstd-coded lossless tensors."""
    out = tmp_path / "mix.zc"
    zoocodec.compress(mnist_path, out, "dq:step=0.01,coder=ctx", min_size=300,
                      overrides={"conv_layers.0.*": "prune:sparsity=0.5,then=kmeans:k=8",
                                 "*.bias": "lossless:coder=zstd"})
    check_damage(tmp_path, out.read_bytes(), 60, seed=3)


@pytest.mark.slow
def test_damaged_containers_raise_container_error_many(tmp_path, real_zc):
    check_damage(tmp_path, real_zc, 1000, seed=1)


def test_random_access_reads_one_tensor(tmp_path, mnist_path):
    out = tmp_path / "m.zc"
    zoocodec.compress(mnist_path, out, "uniform:bits=8")
    full = zoocodec.decompress(out)
    data = bytearray(out.read_bytes())
    with zoocodec.Archive(out) as a:
        seg = a.entries["fc_layers.0.weight"]["segments"]["symbols"]
    data[seg[0] + 10] ^= 0xFF  # damage one tensor: the others still read
    out.write_bytes(bytes(data))
    with zoocodec.Archive(out, verify=False) as a:
        assert torch.equal(a.tensor("conv_layers.3.weight"), full["conv_layers.3.weight"])
        with pytest.raises(ContainerError, match="fc_layers.0.weight"):
            a.read("fc_layers.0.weight")


def test_not_a_container(tmp_path):
    for name, data in (("empty", b""), ("text", b"hello world" * 20), ("zeros", bytes(4096))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ContainerError):
            Container.open(tmp_path / name)
    with pytest.raises(ContainerError, match="no such file"):
        Container.open(tmp_path / "missing.zc")


def test_failed_write_leaves_no_file(tmp_path):
    out = tmp_path / "x.zc"
    with pytest.raises(RuntimeError):
        with Container.create(out) as c:
            c.add_segment(b"abc")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("version", [1, FORMAT_VERSION + 1])
def test_unreadable_format_version_is_refused_in_one_line(tmp_path, monkeypatch, capsys, version):
    out = tmp_path / "old.zc"
    zoocodec.compress(golden_model(), out, "uniform:bits=8", min_size=1000)
    data = bytearray(out.read_bytes())
    data[8:12] = version.to_bytes(4, "little")
    out.write_bytes(bytes(data))
    code, _, err = run_cli(monkeypatch, capsys, "inspect", out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"format version {version} " in err
    assert ("newer than this zoocodec reads" in err) == (version > FORMAT_VERSION)


OLD = Path(__file__).parent / "expected"  # files of older format versions: v2/, v3/
OLD_SPECS = {"uniform:bits=8": "uniform-8", "lossless": "lossless", "dq:step=0.004,coder=ctx": "dq-ctx",
             "kmeans:k=8": "kmeans"}


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("spec", list(OLD_SPECS))
def test_older_format_versions_still_decode(tmp_path, monkeypatch, capsys, spec, version):
    """Files the version-2 and version-3 writers made (tests/expected/v2, v3) decode to what today's
    writer's files decode to, bit for bit, and `verify` checks every byte of them."""
    old = OLD / f"v{version}" / f"{OLD_SPECS[spec]}.zc"
    assert old.read_bytes()[8:12] == version.to_bytes(4, "little")
    zoocodec.compress(golden_model(), tmp_path / "new.zc", spec, min_size=1000)
    got, want = zoocodec.decompress(old), zoocodec.decompress(tmp_path / "new.zc")
    assert list(got) == list(want)
    for k in got:
        assert torch.equal(got[k], want[k]), k
    with Container.open(old) as c:
        payloads = sum(s.length for _, _, s in c._segments())  # (version 3: the chunks; 2: the whole file's hash)
        assert c.version == version and c.verify() == (old.stat().st_size if version == 2 else payloads)
    assert zoocodec.inspect(old)["format_version"] == version
    code, out, _ = run_cli(monkeypatch, capsys, "verify", old)
    assert code == 0 and f"ok (format version {version}," in out


def test_version_3_files_are_the_version_3_golden_bytes():
    """tests/expected/v3 holds what the version-3 writer wrote for the golden model (its hashes were
    the golden ones until version 4): the fixtures are the real thing, not a rewrite."""
    v3 = {"uniform:bits=8": "af6c35fb29242d1df1846a2c62efc822e252a5afee48e55c25a6400a214958db",
          "lossless": "593824270bf102b7350c7e10ddfcb9b40097cb7b3db3881a1550b926ae9b4e45",
          "dq:step=0.004,coder=ctx": "3b98eace1310bc22f0cffc85e60ce2359d5ea25693943c07a770f2d93fbe6f20",
          "kmeans:k=8": "3e51b8dbbec801859d84887640cce11d285dcfbbd95580ff6b58466d584072fc"}
    for spec, digest in v3.items():
        assert hashlib.sha256((OLD / "v3" / f"{OLD_SPECS[spec]}.zc").read_bytes()).hexdigest() == digest, spec


@pytest.mark.parametrize("version", [2, 3])
def test_older_format_damage_is_found(tmp_path, version):
    data = bytearray((OLD / f"v{version}" / "uniform-8.zc").read_bytes())
    data[100] ^= 1
    (tmp_path / "bad.zc").write_bytes(bytes(data))
    with pytest.raises(ContainerError):
        zoocodec.decompress(tmp_path / "bad.zc")


@pytest.mark.parametrize("threads", [1, 2])
def test_version_3_chunk_crcs_are_checked_chunk_by_chunk(tmp_path, threads):
    """A version-3 file with 4 KiB CRC32 chunks (forged from a real one, as its writer would have
    written it): damage in any chunk of a payload is named as a checksum mismatch before any decode
    error, by a read of that tensor (the CRCs checked on Python threads before the native pass) and
    by `verify`; the undamaged file reads bit-exact."""
    from support import Forge

    f = Forge((OLD / "v3" / "lossless.zc").read_bytes())
    assert f.version == 3
    f.header["crc_chunk"] = 4096
    for t in f.header["tensors"]:
        for key, (offset, length, _) in t["segments"].items():
            t["segments"][key] = f.add(bytes(f.body[offset : offset + length]))
    good = f.write(tmp_path / "good.zc")
    want = zoocodec.decompress(OLD / "v3" / "lossless.zc")
    with zoocodec.Archive(good) as a:
        assert all(torch.equal(a.tensor(k), want[k]) for k in want)
        name = max(a.plan, key=lambda n: sum(s.length for s in a.plan[n].segments.values()))
        seg = max(a.plan[name].segments.values(), key=lambda s: s.length)
        assert len(seg.crc) > 2 and a.container.verify()
    data = good.read_bytes()
    for at in (5, 4096 + 9, seg.length - 1):
        bad = bytearray(data)
        bad[seg.offset + at] ^= 0x40
        (tmp_path / "bad.zc").write_bytes(bytes(bad))
        with zoocodec.Archive(tmp_path / "bad.zc") as a, pytest.raises(
                ContainerError, match=rf"payload of tensor '{name}'.* is corrupt \(checksum mismatch\)"):
            a.read_many([name], threads)
        with Container.open(tmp_path / "bad.zc") as c, pytest.raises(ContainerError, match="checksum mismatch"):
            c.verify()


def test_an_old_spec_is_upgraded_before_its_fields_are_checked(tmp_path):
    """lossless version 1 named its coder and zstd's level apart (version 2 has no `level`): a
    header holding it opens and decodes, upgraded first; a wrong type in it is still refused."""
    from support import Forge

    zoocodec.compress({"w": torch.randn(64, 80)}, tmp_path / "new.zc", "lossless:coder=zstd(level=3)")
    f = Forge((tmp_path / "new.zc").read_bytes())
    f.header["tensors"][0]["method"] = {"method": "lossless", "version": 1, "coder": "zstd", "level": 3}
    old = f.write(tmp_path / "old.zc")
    with zoocodec.Archive(old) as a:
        assert str(a.plan["w"].spec) == "lossless:coder=zstd(level=3)"
    assert torch.equal(zoocodec.decompress(old)["w"], zoocodec.decompress(tmp_path / "new.zc")["w"])
    f.header["tensors"][0]["method"]["level"] = "3"
    with pytest.raises(ContainerError, match="invalid header: .*parameter level='3' is not of type int"):
        zoocodec.decompress(f.write(tmp_path / "bad.zc"))


def test_verify_checks_every_byte(tmp_path, monkeypatch, capsys):
    """`zoocodec verify`: a flipped byte anywhere (payload, padding, header, trailer) fails it in
    one line; opening the file does not read the payloads."""
    out = tmp_path / "m.zc"
    zoocodec.compress(golden_model(), out, "uniform:bits=8", min_size=1000)
    code, stdout, _ = run_cli(monkeypatch, capsys, "verify", out)
    assert code == 0 and "ok" in stdout
    data = out.read_bytes()
    g = np.random.default_rng(5)
    for pos in list(g.integers(0, len(data), 40)) + [70, len(data) - 1]:
        bad = bytearray(data)
        bad[pos] ^= 0x10
        (tmp_path / "bad.zc").write_bytes(bytes(bad))
        code, _, err = run_cli(monkeypatch, capsys, "verify", tmp_path / "bad.zc")
        assert code == 2 and len(err.strip().splitlines()) == 1, (pos, err)


def test_chunk_checksums_of_a_large_segment(tmp_path):
    """A payload over one checksum chunk gets an XXH3-64 per chunk; damage in any chunk is found when it is read."""
    from zoocodec.container import CHECK_CHUNK

    xxhash = pytest.importorskip("xxhash")

    payload = np.random.default_rng(1).integers(0, 256, 2 * CHECK_CHUNK + 5, dtype=np.uint8).tobytes()
    out = tmp_path / "c.zc"
    with Container.create(out) as c:
        seg = c.add_segment(payload)
        c.head = Header(Source("dict"), ())
    chunks = range(0, len(payload), CHECK_CHUNK)
    assert seg.crc == [xxhash.xxh3_64_intdigest(payload[at : at + CHECK_CHUNK]) for at in chunks]
    with Container.open(out) as c:
        assert c.segment("it", seg) == payload
    for at in (5, CHECK_CHUNK + 7, 2 * CHECK_CHUNK + 4):
        data = bytearray(out.read_bytes())
        data[seg[0] + at] ^= 1
        out.write_bytes(bytes(data))
        with Container.open(out) as c, pytest.raises(ContainerError, match="payload of it is corrupt"):
            c.segment("it", seg)
        data[seg[0] + at] ^= 1
        out.write_bytes(bytes(data))


def test_a_large_header_is_compressed_faster_and_reads_the_same(tmp_path):
    """Headers over HEADER_SMALL bytes of JSON take zstd level 12 instead of 19 (the same format:
    a reader just decompresses) unless they are a large share of the file; a model of 400 tensors
    writes one and reads back exactly."""
    from zoocodec.container import HEADER_SHARE, HEADER_SMALL, header_level

    big = (HEADER_SMALL + 1) * HEADER_SHARE + 1  # payload bytes
    assert header_level(HEADER_SMALL, big) == 19 and header_level(HEADER_SMALL + 1, big) == 12
    assert header_level(HEADER_SMALL + 1, big - 1) == 19  # a header of 1/HEADER_SHARE of the payloads
    g = np.random.default_rng(1)
    model = {f"layer.{i}.bias": torch.from_numpy(g.standard_normal(16).astype(np.float32)) for i in range(400)}
    zoocodec.compress(model, tmp_path / "m.zc", "uniform:bits=8")
    with zoocodec.Archive(tmp_path / "m.zc") as a:
        import json

        assert len(json.dumps(a.header, sort_keys=True, separators=(",", ":"))) > HEADER_SMALL
    back = zoocodec.decompress(tmp_path / "m.zc")
    assert all(torch.equal(back[k], v) for k, v in model.items())


def test_the_trailer_follows_the_header_unaligned_and_older_padded_trailers_still_read(tmp_path):
    """The trailer comes right after the header (no padding to align it: readers find it from the end);
    files whose writer padded before it (tests/expected/v3, every version-4 file until 2026-12-05) verify."""
    out = tmp_path / "m.zc"
    zoocodec.compress(golden_model(), out, "uniform:bits=8", min_size=1000)
    size = out.stat().st_size
    with Container.open(out, verify=True) as c:
        header_offset, header_len = struct.unpack_from("<QQ", c._buffer, size - TRAILER_SIZE)
    assert header_offset % 64 == 0 and header_offset + header_len == size - TRAILER_SIZE
    padded = tmp_path / "padded.zc"
    data = out.read_bytes()
    pad = bytes(-(header_offset + header_len) % 64)  # what the writer put there before
    assert pad
    padded.write_bytes(data[: size - TRAILER_SIZE] + pad + data[size - TRAILER_SIZE :])
    with Container.open(padded, verify=True) as c, Container.open(out) as d:
        assert c.header == d.header
    back, want = zoocodec.decompress(padded), zoocodec.decompress(out)
    assert all(torch.equal(back[k], v) for k, v in want.items())


def test_padding_is_checked_short_gaps_together_and_long_ones_by_block(tmp_path):
    """verify's padding check (Container._nonzero_padding): the writer's short gaps in one gather,
    longer ones (only a forged file has them) a block at a time; the first non-zero gap either way."""
    payload = bytes(range(1, 201))
    out = tmp_path / "c.zc"
    with Container.create(out) as c:
        seg = c.add_segment(payload)
        c.head = Header(Source("dict"), ())
    end = seg.offset + seg.length
    with Container.open(out) as c:
        assert c._nonzero_padding([(end, end + 40), (0 + 12, 64)]) is None  # (the writer's zeros)
        assert c._nonzero_padding([(end, end + 40), (seg.offset + 3, seg.offset + 13)]) == seg.offset + 3
        assert c._nonzero_padding([(seg.offset, seg.offset + 150), (end, end + 40)]) == seg.offset  # long
        assert c._nonzero_padding([(end, end + 40), (seg.offset + 5, seg.offset + 150)]) == seg.offset + 5
        assert c._nonzero_padding([(seg.offset + 100, seg.offset + 110), (seg.offset + 120, seg.offset + 190)]) \
            == seg.offset + 100  # (a short one before a long one)


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("version", [3, 4])
def test_a_damaged_chunk_is_one_line_naming_the_checksum_before_any_decode_error(tmp_path, monkeypatch, capsys,
                                                                                  version, threads):
    """`zoocodec decompress` of a file with a byte flipped in a payload (version 4 as written now,
    version 3 as its writer left it): exit 2, one line saying the checksum does not match, never a
    decode error, at 1 and 2 threads; `verify` says the same and passes the undamaged file."""
    good = OLD / "v3" / "lossless.zc" if version == 3 else tmp_path / "good.zc"
    if version == 4:
        zoocodec.compress(golden_model(), good, "lossless", min_size=1000)
    monkeypatch.setenv("ZOOCODEC_THREADS", threads)
    code, out, _ = run_cli(monkeypatch, capsys, "verify", good)
    assert code == 0 and f"ok (format version {version}," in out
    with Container.open(good) as c:
        seg = max((s for _, _, s in c._segments()), key=lambda s: s.length)
    for at in (0, seg.length // 2, seg.length - 1):
        bad = bytearray(good.read_bytes())
        bad[seg.offset + at] ^= 0x21
        (tmp_path / "bad.zc").write_bytes(bytes(bad))
        for command in (["decompress", tmp_path / "bad.zc", "-o", tmp_path / "out.safetensors"],
                        ["verify", tmp_path / "bad.zc"]):
            code, _, err = run_cli(monkeypatch, capsys, *command)
            assert code == 2 and len(err.strip().splitlines()) == 1 and "(checksum mismatch)" in err, (at, err)
        assert not (tmp_path / "out.safetensors").exists()


def test_a_version_3_header_takes_only_32_bit_checksums(tmp_path):
    """Each version's checksums are validated at their own width: a version-3 file naming a 33-bit
    chunk checksum is refused as invalid before any payload is read (version 4 takes 64 bits)."""
    from support import Forge

    f = Forge((OLD / "v3" / "uniform-8.zc").read_bytes())
    seg = next(iter(f.header["tensors"][0]["segments"].values()))
    seg[2][0] |= 1 << 32
    with pytest.raises(ContainerError, match="not 32-bit integers"):
        Container.open(f.write(tmp_path / "wide.zc"))


@pytest.mark.parametrize("version", [3, 4])
def test_stage_copies_every_payload_and_checks_each_chunk_on_the_copy(tmp_path, version):
    """Container.stage (a GPU load's one copy of the compressed bytes): each payload at an ALIGN
    boundary of the one buffer, equal to its bytes in the file; a byte flipped in any chunk of any
    payload is named as a checksum mismatch (version 4: XXH3-64 on the native pass, 4 KiB chunks
    here; version 3: CRC32 on the copies)."""
    from support import Forge, host_memory
    from zoocodec.container import ALIGN

    if version == 4:
        zoocodec.compress(golden_model(), tmp_path / "src.zc", "lossless", min_size=1)
    f = Forge(((OLD / "v3" / "lossless.zc") if version == 3 else tmp_path / "src.zc").read_bytes())
    f.header["crc_chunk"] = 4096
    for t in f.header["tensors"]:
        for key, (offset, length, _) in t["segments"].items():
            t["segments"][key] = f.add(bytes(f.body[offset : offset + length]))
    good = f.write(tmp_path / "good.zc")

    def stage(path):
        with Container.open(path) as c:
            items = [(f"tensor {i}", s) for i, (_, _, s) in enumerate(c._segments())]
            out, views = c.stage(items, host_memory)
            starts = [np.frombuffer(v, np.uint8).ctypes.data - out.ctypes.data for v in views]
            copies = [bytes(v) for v in views]
            return items, starts, copies

    items, starts, copies = stage(good)
    data = good.read_bytes()
    assert all(at % ALIGN == 0 for at in starts) and starts == sorted(starts)
    assert copies == [data[s.offset : s.offset + s.length] for _, s in items]
    where, seg = max(items, key=lambda i: i[1].length)
    assert seg.length > 2 * 4096
    for at in (3, 4096 + 5, seg.length - 1):
        bad = bytearray(data)
        bad[seg.offset + at] ^= 0x10
        (tmp_path / "bad.zc").write_bytes(bytes(bad))
        with pytest.raises(ContainerError, match=rf"payload of {where} is corrupt \(checksum mismatch\)"):
            stage(tmp_path / "bad.zc")


def test_native_stage_refuses_a_payload_past_the_end():
    from zoocodec.codecs import native
    from zoocodec.container import chunk_sums

    eng, payload = native.engine(), bytes(range(200))
    out = np.zeros(300, np.uint8)
    assert eng.stage([(payload, 64, chunk_sums(payload, 64), 100)], out) == -1
    assert bytes(out[100:300]) == payload
    with pytest.raises(ValueError, match="past the end"):
        eng.stage([(payload, 64, chunk_sums(payload, 64), 101)], out)
    with pytest.raises(ValueError, match="one checksum a chunk"):
        eng.stage([(payload, 64, chunk_sums(payload, 64)[:-1], 0)], out)
