"""Merkle tree of the audit ledger: hashes, roots, inclusion and consistency proofs (RFC 9162).

Pure functions over leaf hashes; no database, no I/O. The tree is the one of RFC 9162 section
2.1 (the same as RFC 6962's): leaves hashed with a 0x00 prefix, interior nodes with 0x01, a
tree of n leaves split at the largest power of two smaller than n, so an unbalanced right edge
is never padded or duplicated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from cryptography.hazmat.primitives import hashes

__all__ = [
    "CompactTree",
    "HashAlgorithm",
    "MerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "subtree_root",
    "verify_consistency",
    "verify_inclusion",
]

# RFC 9162 section 2.1.1: domain separation between leaves and interior nodes, so a leaf can
# never be passed off as an interior node (second-preimage resistance).
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class HashAlgorithm(StrEnum):
    """The tree's hash: SHA-256 (RFC 9162) or SM3 (GB/T 32905-2016), both 32-byte digests."""

    SHA256 = "sha256"
    SM3 = "sm3"

    @property
    def digest_size(self) -> int:
        """Length in bytes of one digest (32 for both)."""
        return _PRIMITIVES[self].digest_size

    def digest(self, *parts: bytes) -> bytes:
        """Hash the concatenation of ``parts``."""
        context = hashes.Hash(_PRIMITIVES[self])
        for part in parts:
            context.update(part)
        return context.finalize()

    def empty_root(self) -> bytes:
        """Root of the empty tree: the hash of the empty string (RFC 9162 section 2.1.1)."""
        return _EMPTY_ROOTS[self]


# Both through `cryptography` (OpenSSL): the standard library's hashlib has no SM3 on most
# builds, and one code path for both keeps the SM3 ledger exactly as tested as the SHA-256 one.
_PRIMITIVES: dict[HashAlgorithm, hashes.HashAlgorithm] = {
    HashAlgorithm.SHA256: hashes.SHA256(),
    HashAlgorithm.SM3: hashes.SM3(),
}
_EMPTY_ROOTS: dict[HashAlgorithm, bytes] = {alg: alg.digest() for alg in HashAlgorithm}


def leaf_hash(data: bytes, *, algorithm: HashAlgorithm = HashAlgorithm.SHA256) -> bytes:
    """MTH({d}) = HASH(0x00 || d), RFC 9162 section 2.1.1."""
    return algorithm.digest(_LEAF_PREFIX, data)


def node_hash(
    left: bytes, right: bytes, *, algorithm: HashAlgorithm = HashAlgorithm.SHA256
) -> bytes:
    """HASH(0x01 || left || right), RFC 9162 section 2.1.1."""
    return algorithm.digest(_NODE_PREFIX, left, right)


def _split(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1), RFC 9162 section 2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def _parent_level(level: Sequence[bytes], algorithm: HashAlgorithm) -> list[bytes]:
    """Pair up one level; an odd last node is promoted unchanged (never duplicated)."""
    parents = [
        algorithm.digest(_NODE_PREFIX, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)
    ]
    if len(level) % 2:
        parents.append(level[-1])
    return parents


def root(leaf_hashes: Sequence[bytes], *, algorithm: HashAlgorithm = HashAlgorithm.SHA256) -> bytes:
    """MTH(D[n]) over already hashed leaves, RFC 9162 section 2.1.1.

    Computed level by level rather than by the recursive definition: promoting an unpaired
    right-edge node is the same tree as splitting at the largest power of two, with no
    recursion and n - 1 node hashes.
    """
    if not leaf_hashes:
        return algorithm.empty_root()
    level: Sequence[bytes] = leaf_hashes
    while len(level) > 1:
        level = _parent_level(level, algorithm)
    return level[0]


def subtree_root(
    leaf_hashes: Sequence[bytes],
    start: int,
    end: int,
    *,
    algorithm: HashAlgorithm = HashAlgorithm.SHA256,
) -> bytes:
    """MTH(D[start:end]): the root of any contiguous range of leaves."""
    if not 0 <= start <= end <= len(leaf_hashes):
        raise ValueError(
            f"subtree [{start}, {end}) is not within a tree of {len(leaf_hashes)} leaves"
        )
    return root(leaf_hashes[start:end], algorithm=algorithm)


class MerkleTree:
    """Every node of the tree over ``leaf_hashes``, computed once (n - 1 node hashes).

    Then any inclusion proof or consistency proof for this size costs O(log n) lookups. Every
    subtree RFC 9162 proofs name is a node here: ``levels[l][i]`` is MTH(D[i*2**l :
    min((i+1)*2**l, n)]).
    """

    def __init__(
        self, leaf_hashes: Sequence[bytes], *, algorithm: HashAlgorithm = HashAlgorithm.SHA256
    ) -> None:
        self.algorithm = algorithm
        self.size = len(leaf_hashes)
        self.levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(self.levels[-1]) > 1:
            self.levels.append(_parent_level(self.levels[-1], algorithm))

    def root(self) -> bytes:
        """MTH(D[n]), RFC 9162 section 2.1.1."""
        if self.size == 0:
            return self.algorithm.empty_root()
        return self.levels[-1][0]

    def _node(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range that is a node of this tree."""
        height = (end - start - 1).bit_length()
        width = 1 << height
        if start % width or end != min(start + width, self.size):
            raise ValueError(f"[{start}, {end}) is not a node of a tree of {self.size} leaves")
        return self.levels[height][start >> height]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """PATH(m, D[n]), RFC 9162 section 2.1.3.1, leaf-side sibling first."""
        if not 0 <= index < self.size:
            raise ValueError(f"leaf index {index} is not in a tree of {self.size} leaves")
        siblings: list[bytes] = []
        lo, hi, m = 0, self.size, index
        # PATH(m, D[lo:hi]) = PATH(m, D[lo:lo+k]) : MTH(D[lo+k:hi])       if m < k
        #                   = PATH(m - k, D[lo+k:hi]) : MTH(D[lo:lo+k])   otherwise
        # walked from the root down, so the siblings come out in reverse order.
        while hi - lo > 1:
            k = _split(hi - lo)
            if m < k:
                siblings.append(self._node(lo + k, hi))
                hi = lo + k
            else:
                siblings.append(self._node(lo, lo + k))
                lo, m = lo + k, m - k
        siblings.reverse()
        return siblings

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """PROOF(m, D[n]), RFC 9162 section 2.1.4.1; empty when m is 0 or n."""
        if not 0 <= old_size <= self.size:
            raise ValueError(f"old size {old_size} is not between 0 and the tree size {self.size}")
        if old_size in (0, self.size):
            return []
        nodes: list[bytes] = []
        lo, hi, m, whole = 0, self.size, old_size, True
        # SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])};
        # m <= k: SUBPROOF(m, D[0:k], b) : MTH(D[k:n]);
        # m > k:  SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]).
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                nodes.append(self._node(lo + k, hi))
                hi = lo + k
            else:
                nodes.append(self._node(lo, lo + k))
                lo, m, whole = lo + k, m - k, False
        if not whole:
            nodes.append(self._node(lo, hi))
        nodes.reverse()
        return nodes


def inclusion_proof(
    index: int, leaf_hashes: Sequence[bytes], *, algorithm: HashAlgorithm = HashAlgorithm.SHA256
) -> list[bytes]:
    """Audit path of leaf ``index`` in the tree of ``leaf_hashes``, RFC 9162 section 2.1.3.1."""
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index} is not in a tree of {len(leaf_hashes)} leaves")
    return MerkleTree(leaf_hashes, algorithm=algorithm).inclusion_proof(index)


def consistency_proof(
    old_size: int,
    new_size: int,
    leaf_hashes: Sequence[bytes],
    *,
    algorithm: HashAlgorithm = HashAlgorithm.SHA256,
) -> list[bytes]:
    """Proof that the first ``old_size`` leaves are a prefix of the first ``new_size``.

    RFC 9162 section 2.1.4.1. ``leaf_hashes`` may hold more than ``new_size`` leaves.
    """
    if not 0 <= old_size <= new_size <= len(leaf_hashes):
        raise ValueError(
            f"need 0 <= old size ({old_size}) <= new size ({new_size}) <= "
            f"leaves available ({len(leaf_hashes)})"
        )
    return MerkleTree(leaf_hashes[:new_size], algorithm=algorithm).consistency_proof(old_size)


def _valid_hashes(algorithm: HashAlgorithm, *values: bytes) -> bool:
    size = algorithm.digest_size
    return all(isinstance(v, bytes) and len(v) == size for v in values)


def verify_inclusion(
    *,
    index: int,
    size: int,
    leaf_hash: bytes,
    proof: Sequence[bytes],
    root: bytes,
    algorithm: HashAlgorithm = HashAlgorithm.SHA256,
) -> bool:
    """Check an audit path, exactly as RFC 9162 section 2.1.3.2; never raises on bad input."""
    if not 0 <= index < size or not _valid_hashes(algorithm, leaf_hash, root, *proof):
        return False
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False  # proof longer than the path
        if fn & 1 or fn == sn:
            r = algorithm.digest(_NODE_PREFIX, p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = algorithm.digest(_NODE_PREFIX, r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    *,
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
    algorithm: HashAlgorithm = HashAlgorithm.SHA256,
) -> bool:
    """Check a consistency proof, exactly as RFC 9162 section 2.1.4.2; never raises.

    The RFC's algorithm covers 0 < old_size < new_size. Its trivial cases, from section
    2.1.4.1 (PROOF(m, D[m]) = {}): equal sizes need an empty proof and equal roots; the empty
    tree (whose root must be the hash of the empty string) is a prefix of every tree.
    """
    if not 0 <= old_size <= new_size or not _valid_hashes(algorithm, old_root, new_root, *proof):
        return False
    if old_size == 0:
        return not proof and old_root == algorithm.empty_root()
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False  # step 1
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)  # step 2: the old tree is itself a node of the new one
    fn, sn = old_size - 1, new_size - 1  # step 3
    while fn & 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = algorithm.digest(_NODE_PREFIX, c, fr)
            sr = algorithm.digest(_NODE_PREFIX, c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = algorithm.digest(_NODE_PREFIX, sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old_root and sr == new_root and sn == 0  # step 7


class CompactTree:
    """An append-only tree that keeps only its frontier: the roots of its perfect subtrees.

    A tree of n leaves is, left to right, perfect subtrees of the sizes of n's set bits
    (largest first), so the state is popcount(n) <= 64 hashes: enough to append and to compute
    the root (RFC 9162 section 2.1.1) without rereading a single leaf. The ledger persists
    ``to_bytes()`` with each batch and resumes with ``from_bytes()`` after a restart.
    """

    __slots__ = ("_frontier", "_size", "algorithm")

    def __init__(self, *, algorithm: HashAlgorithm = HashAlgorithm.SHA256) -> None:
        self.algorithm = algorithm
        self._size = 0
        self._frontier: list[bytes] = []

    @classmethod
    def restore(
        cls,
        size: int,
        frontier: Sequence[bytes],
        *,
        algorithm: HashAlgorithm = HashAlgorithm.SHA256,
    ) -> CompactTree:
        """Rebuild a tree from its ``size`` and ``frontier``, checking they fit together."""
        if size < 0:
            raise ValueError(f"tree size {size} is negative")
        if len(frontier) != size.bit_count():
            raise ValueError(
                f"a tree of {size} leaves has {size.bit_count()} frontier hashes, "
                f"not {len(frontier)}"
            )
        if not _valid_hashes(algorithm, *frontier):
            raise ValueError(f"frontier hashes must be {algorithm.digest_size}-byte {algorithm}")
        tree = cls(algorithm=algorithm)
        tree._size = size
        tree._frontier = list(frontier)
        return tree

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def frontier(self) -> tuple[bytes, ...]:
        """Roots of the perfect subtrees, largest (leftmost) first."""
        return tuple(self._frontier)

    def append(self, leaf_hash: bytes) -> int:
        """Add one leaf hash; return its index."""
        if not _valid_hashes(self.algorithm, leaf_hash):
            raise ValueError(
                f"a leaf hash must be {self.algorithm.digest_size} bytes of {self.algorithm}"
            )
        index = self._size
        node = leaf_hash
        # Like a binary counter: every trailing 1 bit of the size is a perfect subtree that the
        # new node completes into one twice its size.
        carry = index
        while carry & 1:
            node = self.algorithm.digest(_NODE_PREFIX, self._frontier.pop(), node)
            carry >>= 1
        self._frontier.append(node)
        self._size = index + 1
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> range:
        """Append a batch; return the range of the indexes given."""
        first = self._size
        for value in leaf_hashes:
            self.append(value)
        return range(first, self._size)

    def root(self) -> bytes:
        """MTH(D[n]): the frontier folded right to left, RFC 9162 section 2.1.1."""
        if not self._frontier:
            return self.algorithm.empty_root()
        result = self._frontier[-1]
        for left in reversed(self._frontier[:-1]):
            result = self.algorithm.digest(_NODE_PREFIX, left, result)
        return result

    def to_bytes(self) -> bytes:
        """State as bytes: the size (8 bytes, big-endian) then the frontier hashes."""
        return self._size.to_bytes(8, "big") + b"".join(self._frontier)

    @classmethod
    def from_bytes(
        cls, state: bytes, *, algorithm: HashAlgorithm = HashAlgorithm.SHA256
    ) -> CompactTree:
        """Inverse of ``to_bytes``; ValueError when the state is malformed."""
        width = algorithm.digest_size
        if len(state) < 8 or (len(state) - 8) % width:
            raise ValueError(f"a compact tree state is 8 + k * {width} bytes, not {len(state)}")
        size = int.from_bytes(state[:8], "big")
        frontier = [state[i : i + width] for i in range(8, len(state), width)]
        return cls.restore(size, frontier, algorithm=algorithm)
