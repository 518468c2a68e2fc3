"""Tests for services/audit/merkle.py: RFC 9162 trees, proofs and tamper detection."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives import hashes

from services.audit.merkle import (
    CompactTree,
    HashAlgorithm,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    subtree_root,
    verify_consistency,
    verify_inclusion,
)

SHA256 = HashAlgorithm.SHA256
SM3 = HashAlgorithm.SM3

# The reference tree of Certificate Transparency (google/certificate-transparency,
# cpp/merkletree/merkle_tree_test.cc, kInputs), the RFC 6962 tree that RFC 9162 keeps.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
# Published roots for sizes 1..8 (same file, kSHA256Roots), and SHA-256("") for size 0.
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# Published audit paths (kSHA256Paths; the C++ test numbers leaves from 1, here from 0).
CT_PATHS = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
# Published consistency proofs (kSHA256Proofs).
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
# No SM3 Merkle vectors are published; these were computed by the reference functions below
# (an independent recursive transcription of RFC 9162 section 2.1.1 over GB/T 32905 SM3, whose
# own "abc" vector is pinned in test_sm3_primitive) and pinned here.
SM3_CT_ROOT_8 = "bc48ba7a709184b5f2a631e1adeb8dc2a0d4c018c1d6cc89b5664fe154c93b38"


def ct_leaf_hashes(algorithm: HashAlgorithm = SHA256) -> list[bytes]:
    return [leaf_hash(data, algorithm=algorithm) for data in CT_LEAVES]


def synthetic_leaves(n: int, algorithm: HashAlgorithm = SHA256) -> list[bytes]:
    return [leaf_hash(f"entry {i}".encode(), algorithm=algorithm) for i in range(n)]


# --- an independent reference: the recursive definitions of RFC 9162, written out naively ----


def ref_hash(algorithm: HashAlgorithm, data: bytes) -> bytes:
    # Not the module's code path: hashlib for SHA-256, a fresh `cryptography` context for SM3.
    if algorithm is SHA256:
        return hashlib.sha256(data).digest()
    context = hashes.Hash(hashes.SM3())
    context.update(data)
    return context.finalize()


def ref_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: Sequence[bytes], algorithm: HashAlgorithm = SHA256) -> bytes:
    """MTH over raw entries, RFC 9162 section 2.1.1."""
    if not leaves:
        return ref_hash(algorithm, b"")
    if len(leaves) == 1:
        return ref_hash(algorithm, b"\x00" + leaves[0])
    k = ref_split(len(leaves))
    left, right = ref_mth(leaves[:k], algorithm), ref_mth(leaves[k:], algorithm)
    return ref_hash(algorithm, b"\x01" + left + right)


def ref_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 9162 section 2.1.3.1."""
    if len(leaves) == 1:
        return []
    k = ref_split(len(leaves))
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), RFC 9162 section 2.1.4.1."""
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = ref_split(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


# --- known vectors ---------------------------------------------------------------------------


def test_sm3_primitive() -> None:
    # GB/T 32905-2016 appendix A.1: SM3("abc").
    assert SM3.digest(b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )


@pytest.mark.parametrize("size", range(9))
def test_ct_roots(size: int) -> None:
    hashes_ = ct_leaf_hashes()[:size]
    assert root(hashes_).hex() == CT_ROOTS[size]
    assert ref_mth(CT_LEAVES[:size]).hex() == CT_ROOTS[size]
    assert MerkleTree(hashes_).root().hex() == CT_ROOTS[size]
    compact = CompactTree()
    compact.extend(hashes_)
    assert compact.root().hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "expected"), CT_PATHS)
def test_ct_inclusion_paths(index: int, size: int, expected: list[str]) -> None:
    hashes_ = ct_leaf_hashes()[:size]
    proof = inclusion_proof(index, hashes_)
    assert [p.hex() for p in proof] == expected
    assert verify_inclusion(
        index=index,
        size=size,
        leaf_hash=hashes_[index],
        proof=proof,
        root=bytes.fromhex(CT_ROOTS[size]),
    )


@pytest.mark.parametrize(("old", "new", "expected"), CT_CONSISTENCY)
def test_ct_consistency_proofs(old: int, new: int, expected: list[str]) -> None:
    proof = consistency_proof(old, new, ct_leaf_hashes())
    assert [p.hex() for p in proof] == expected
    assert verify_consistency(
        old_size=old,
        new_size=new,
        old_root=bytes.fromhex(CT_ROOTS[old]),
        new_root=bytes.fromhex(CT_ROOTS[new]),
        proof=proof,
    )


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert a == hashlib.sha256(b"\x00a").digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    # A leaf whose data is two hashes is not the node of those hashes.
    assert leaf_hash(a + b) != node_hash(a, b)


def test_sm3_tree_differs_and_verifies_under_sm3() -> None:
    sm3_hashes = ct_leaf_hashes(SM3)
    sm3_root = root(sm3_hashes, algorithm=SM3)
    assert sm3_root.hex() == SM3_CT_ROOT_8
    assert sm3_root == ref_mth(CT_LEAVES, SM3)
    assert sm3_root.hex() != CT_ROOTS[8]
    assert root([], algorithm=SM3) == SM3.digest(b"") != root([])
    for index in range(8):
        proof = inclusion_proof(index, sm3_hashes, algorithm=SM3)
        assert verify_inclusion(
            index=index, size=8, leaf_hash=sm3_hashes[index], proof=proof, root=sm3_root,
            algorithm=SM3,
        )  # fmt: skip
        # The same proof does not check out when verified with the other hash.
        assert not verify_inclusion(
            index=index, size=8, leaf_hash=sm3_hashes[index], proof=proof, root=sm3_root
        )
    for old in range(1, 8):
        proof = consistency_proof(old, 8, sm3_hashes, algorithm=SM3)
        old_root = root(sm3_hashes[:old], algorithm=SM3)
        assert verify_consistency(
            old_size=old, new_size=8, old_root=old_root, new_root=sm3_root, proof=proof,
            algorithm=SM3,
        )  # fmt: skip
        assert not verify_consistency(
            old_size=old, new_size=8, old_root=old_root, new_root=sm3_root, proof=proof
        )
    compact = CompactTree(algorithm=SM3)
    compact.extend(sm3_hashes)
    assert compact.root() == sm3_root


# --- every small case, then randomized larger ones, against the reference ------------------


def test_every_inclusion_and_consistency_proof_up_to_8() -> None:
    hashes_ = ct_leaf_hashes()
    for size in range(1, 9):
        tree_root = root(hashes_[:size])
        for index in range(size):
            proof = inclusion_proof(index, hashes_[:size])
            assert proof == ref_path(index, CT_LEAVES[:size])
            assert verify_inclusion(
                index=index, size=size, leaf_hash=hashes_[index], proof=proof, root=tree_root
            )
    for new in range(9):
        for old in range(new + 1):
            proof = consistency_proof(old, new, hashes_)
            expected = [] if old in (0, new) else ref_subproof(old, CT_LEAVES[:new], True)
            assert proof == expected
            assert verify_consistency(
                old_size=old,
                new_size=new,
                old_root=root(hashes_[:old]),
                new_root=root(hashes_[:new]),
                proof=proof,
            )


@pytest.mark.parametrize("size", [9, 31, 64, 127, 128, 129, 200, 255, 256, 257, 300])
def test_randomized_proofs_up_to_300(size: int) -> None:
    rng = random.Random(size)  # deterministic: a failure reproduces
    leaves = [rng.randbytes(rng.randint(0, 40)) for _ in range(size)]
    hashes_ = [leaf_hash(data) for data in leaves]
    tree = MerkleTree(hashes_)
    assert tree.root() == ref_mth(leaves) == root(hashes_)
    for index in [*rng.sample(range(size), min(12, size)), 0, size - 1]:
        proof = tree.inclusion_proof(index)
        assert proof == ref_path(index, leaves)
        assert verify_inclusion(
            index=index, size=size, leaf_hash=hashes_[index], proof=proof, root=tree.root()
        )
        assert not verify_inclusion(
            index=index, size=size, leaf_hash=hashes_[index - 1], proof=proof, root=tree.root()
        )
    for old in [*rng.sample(range(1, size), min(12, size - 1)), 1, size - 1, size]:
        proof = tree.consistency_proof(old)
        assert proof == ([] if old == size else ref_subproof(old, leaves, True))
        old_root = root(hashes_[:old])
        assert verify_consistency(
            old_size=old, new_size=size, old_root=old_root, new_root=tree.root(), proof=proof
        )
        if old < size:
            assert not verify_consistency(
                old_size=old, new_size=size, old_root=leaf_hash(b"forged"), new_root=tree.root(),
                proof=proof,
            )  # fmt: skip


def test_subtree_root_is_the_root_of_any_range() -> None:
    hashes_ = synthetic_leaves(20)
    for start, end in [(0, 20), (3, 11), (8, 16), (19, 20), (5, 5)]:
        assert subtree_root(hashes_, start, end) == root(hashes_[start:end])
    with pytest.raises(ValueError, match="not within a tree of 20 leaves"):
        subtree_root(hashes_, 4, 21)


# --- the compact tree -----------------------------------------------------------------------


def test_compact_tree_matches_root_at_every_size_up_to_300() -> None:
    hashes_ = synthetic_leaves(300)
    compact = CompactTree()
    assert compact.root() == root([])
    for size, value in enumerate(hashes_, start=1):
        assert compact.append(value) == size - 1
        assert compact.size == size
        assert len(compact.frontier) == size.bit_count()
        assert compact.root() == root(hashes_[:size])
        restored = CompactTree.from_bytes(compact.to_bytes())
        assert restored.size == size
        assert restored.root() == compact.root()
    # A restored tree keeps appending as if it had never stopped.
    assert CompactTree.from_bytes(CompactTree().to_bytes()).root() == root([])
    for cut in (1, 77, 128, 255):
        resumed = CompactTree.restore(cut, compact_prefix(hashes_, cut).frontier)
        assert resumed.extend(hashes_[cut:]) == range(cut, 300)
        assert resumed.root() == root(hashes_)


def compact_prefix(hashes_: Sequence[bytes], size: int) -> CompactTree:
    tree = CompactTree()
    tree.extend(hashes_[:size])
    return tree


def test_compact_tree_refuses_malformed_state() -> None:
    good = compact_prefix(synthetic_leaves(5), 5)
    with pytest.raises(ValueError, match="has 2 frontier hashes, not 1"):
        CompactTree.restore(5, good.frontier[:1])
    with pytest.raises(ValueError, match="8 \\+ k \\* 32 bytes"):
        CompactTree.from_bytes(good.to_bytes()[:-1])
    with pytest.raises(ValueError, match="8 \\+ k \\* 32 bytes"):
        CompactTree.from_bytes(b"\x00")
    with pytest.raises(ValueError, match="negative"):
        CompactTree.restore(-1, [])
    with pytest.raises(ValueError, match="32 bytes"):
        CompactTree().append(b"short")


# --- tamper detection: what `onecard audit verify` relies on --------------------------------


def tampered_variants(leaves: list[bytes]) -> dict[str, list[bytes]]:
    variants: dict[str, list[bytes]] = {}
    for i, data in enumerate(leaves):
        for j in range(len(data)):
            edited = bytearray(data)
            edited[j] ^= 0x01
            variants[f"flip byte {j} of leaf {i}"] = [*leaves[:i], bytes(edited), *leaves[i + 1 :]]
        variants[f"delete leaf {i}"] = leaves[:i] + leaves[i + 1 :]
        if i + 1 < len(leaves) and leaves[i] != leaves[i + 1]:
            swapped = list(leaves)
            swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
            variants[f"swap leaves {i} and {i + 1}"] = swapped
        if i:
            variants[f"truncate to {i}"] = leaves[:i]
    return variants


@pytest.mark.parametrize("algorithm", list(HashAlgorithm))
def test_every_tampering_changes_the_root(algorithm: HashAlgorithm) -> None:
    leaves = [*CT_LEAVES, b"entry nine", b"entry ten"]
    stored_root = root([leaf_hash(d, algorithm=algorithm) for d in leaves], algorithm=algorithm)
    variants = tampered_variants(leaves)
    assert len(variants) > 60
    for name, variant in variants.items():
        recomputed = root([leaf_hash(d, algorithm=algorithm) for d in variant], algorithm=algorithm)
        assert recomputed != stored_root, name


def test_tampered_leaf_fails_its_inclusion_proof_and_an_appended_tree_stays_consistent() -> None:
    leaves = [f"entry {i}".encode() for i in range(13)]
    hashes_ = [leaf_hash(d) for d in leaves]
    stored_root = root(hashes_)
    for index in range(13):
        proof = inclusion_proof(index, hashes_)
        forged = leaf_hash(leaves[index] + b"!")
        assert not verify_inclusion(
            index=index, size=13, leaf_hash=forged, proof=proof, root=stored_root
        )
    # A history rewritten below an earlier checkpoint cannot be proven consistent with it.
    rewritten = [*hashes_[:4], leaf_hash(b"rewritten"), *hashes_[5:], *synthetic_leaves(3)]
    proof = consistency_proof(8, 16, rewritten)
    assert not verify_consistency(
        old_size=8, new_size=16, old_root=root(hashes_[:8]), new_root=root(rewritten), proof=proof
    )


# --- bad input is refused cleanly, never with IndexError --------------------------------------


def test_generation_refuses_impossible_requests() -> None:
    hashes_ = ct_leaf_hashes()
    with pytest.raises(ValueError, match="leaf index 8 is not in a tree of 8 leaves"):
        inclusion_proof(8, hashes_)
    with pytest.raises(ValueError, match="leaf index -1"):
        inclusion_proof(-1, hashes_)
    with pytest.raises(ValueError, match="not in a tree of 0 leaves"):
        inclusion_proof(0, [])
    with pytest.raises(ValueError, match="old size \\(5\\) <= new size \\(3\\)"):
        consistency_proof(5, 3, hashes_)
    with pytest.raises(ValueError, match="leaves available \\(8\\)"):
        consistency_proof(3, 9, hashes_)


def test_inclusion_verification_refuses_bad_input() -> None:
    hashes_ = ct_leaf_hashes()
    good = {"index": 5, "size": 8, "leaf_hash": hashes_[5], "root": bytes.fromhex(CT_ROOTS[8])}
    proof = inclusion_proof(5, hashes_)
    assert verify_inclusion(proof=proof, **good)  # type: ignore[arg-type]
    bad_calls: list[dict[str, object]] = [
        {**good, "proof": []},
        {**good, "proof": proof[:-1]},
        {**good, "proof": [*proof, proof[-1]]},
        {**good, "proof": [b"", *proof]},
        {**good, "proof": [proof[0][:-1], *proof[1:]]},
        {**good, "proof": proof, "index": 8},
        {**good, "proof": proof, "index": -1},
        {**good, "proof": proof, "size": 0},
        {**good, "proof": proof, "size": 16},
        {**good, "proof": proof, "size": 4},
        {**good, "proof": proof, "index": 4},
        {**good, "proof": proof, "root": b"\x00" * 32},
        {**good, "proof": proof, "root": b""},
        {**good, "proof": proof, "leaf_hash": b""},
        {"index": 0, "size": 1, "leaf_hash": hashes_[0], "root": b"", "proof": []},
    ]
    for call in bad_calls:
        assert not verify_inclusion(**call), call  # type: ignore[arg-type]


def test_consistency_verification_refuses_bad_input() -> None:
    hashes_ = ct_leaf_hashes()
    r6, r8 = bytes.fromhex(CT_ROOTS[6]), bytes.fromhex(CT_ROOTS[8])
    proof = consistency_proof(6, 8, hashes_)
    good = {"old_size": 6, "new_size": 8, "old_root": r6, "new_root": r8}
    assert verify_consistency(proof=proof, **good)  # type: ignore[arg-type]
    bad_calls: list[dict[str, object]] = [
        {**good, "proof": []},
        {**good, "proof": proof[:-1]},
        {**good, "proof": [*proof, proof[-1]]},
        {**good, "proof": [proof[0], *proof]},
        {**good, "proof": [b"", *proof[1:]]},
        {**good, "proof": proof, "old_size": 8, "new_size": 6},
        {**good, "proof": proof, "old_size": 5},
        {**good, "proof": proof, "old_size": 7},
        {**good, "proof": proof, "new_size": 16},
        {**good, "proof": proof, "new_size": 4},
        {**good, "proof": proof, "old_size": -1},
        {**good, "proof": proof, "old_root": r8, "new_root": r6},
        {**good, "proof": proof, "old_root": b"\x00" * 32},
        {**good, "proof": proof, "new_root": b"short"},
        # Trivial cases: equal sizes need equal roots and no proof; size 0 needs H("").
        {"old_size": 8, "new_size": 8, "old_root": r6, "new_root": r8, "proof": []},
        {"old_size": 8, "new_size": 8, "old_root": r8, "new_root": r8, "proof": proof},
        {"old_size": 0, "new_size": 8, "old_root": r6, "new_root": r8, "proof": []},
        {"old_size": 0, "new_size": 8, "old_root": bytes.fromhex(CT_ROOTS[0]), "new_root": r8,
         "proof": proof},
    ]  # fmt: skip
    for call in bad_calls:
        assert not verify_consistency(**call), call  # type: ignore[arg-type]
    assert verify_consistency(
        old_size=0, new_size=8, old_root=bytes.fromhex(CT_ROOTS[0]), new_root=r8, proof=[]
    )
