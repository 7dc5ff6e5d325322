"""Signed, hash-chained receipts that anyone can verify with the public JWKS.

See README.md in this folder for the receipt format and how customers verify.
"""

from crypto._anchor import CheckpointAnchor, ConsistencyAnswer
from crypto._canonical import canonical_json
from crypto._chain import ChainFailure, ChainReport, verify_chain
from crypto._check import LeafCheck, verify_receipt
from crypto._checkpoint import (
    CHECKPOINT_TYP,
    Checkpoint,
    checkpoint_payload,
    sign_checkpoint,
    verify_checkpoint,
)
from crypto._edge import Appended, RightEdge
from crypto._errors import (
    CanonicalizationError,
    CheckpointError,
    JWKSError,
    KeyLoadError,
    KmsError,
    LogError,
    NoteError,
    ProofError,
    ReceiptFieldError,
)
from crypto._evidence import (
    EvidenceCheck,
    EvidenceReport,
    check_evidence,
    evidence_verdict,
    seal_bundle,
)
from crypto._jsonl import verify_jsonl
from crypto._jws import VerificationResult
from crypto._keyring import KeyRing
from crypto._keys import SigningKey, load_or_create_dev_key, load_private_key_pem
from crypto._kms import (
    KMS_ENDPOINT,
    KMS_KEY_URI_SCHEME,
    GoogleAccessToken,
    KmsSigningKey,
    kms_call_deadline_ms,
    kms_key_name,
)
from crypto._merkle import (
    EMPTY_ROOT,
    HashReader,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from crypto._note import (
    NoteKey,
    checkpoint_note_text,
    load_or_create_note_key,
    open_note,
    parse_checkpoint_note,
    sign_note,
)
from crypto._receipt_log import (
    LogBlockError,
    LogPosition,
    LogProof,
    check_log_block,
    receipt_leaf,
)
from crypto._seal import HashedCore, hash_core, seal_receipt, sealed_document
from crypto._sign_process import SigningProcess, SigningProcessError, sign_reply_timeout_ms
from crypto._signer import Signer
from crypto._tiles import (
    TILE_HEIGHT,
    TILE_WIDTH_MAX,
    TileHashReader,
    TileKey,
    parse_tile_path,
    tile_path,
    tile_width,
)
from crypto._trusted import TrustedKeys
from crypto.receipt import GENESIS_HASH, RECEIPT_CORE_FIELDS, receipt_hash

__all__ = [
    "CHECKPOINT_TYP",
    "EMPTY_ROOT",
    "GENESIS_HASH",
    "KMS_ENDPOINT",
    "KMS_KEY_URI_SCHEME",
    "RECEIPT_CORE_FIELDS",
    "TILE_HEIGHT",
    "TILE_WIDTH_MAX",
    "Appended",
    "CanonicalizationError",
    "ChainFailure",
    "ChainReport",
    "Checkpoint",
    "CheckpointAnchor",
    "CheckpointError",
    "ConsistencyAnswer",
    "EvidenceCheck",
    "EvidenceReport",
    "GoogleAccessToken",
    "HashReader",
    "HashedCore",
    "JWKSError",
    "KeyLoadError",
    "KeyRing",
    "KmsError",
    "KmsSigningKey",
    "LeafCheck",
    "LogBlockError",
    "LogError",
    "LogPosition",
    "LogProof",
    "NoteError",
    "NoteKey",
    "ProofError",
    "ReceiptFieldError",
    "RightEdge",
    "Signer",
    "SigningKey",
    "SigningProcess",
    "SigningProcessError",
    "TileHashReader",
    "TileKey",
    "TrustedKeys",
    "VerificationResult",
    "canonical_json",
    "check_evidence",
    "check_log_block",
    "checkpoint_note_text",
    "checkpoint_payload",
    "consistency_proof",
    "evidence_verdict",
    "hash_core",
    "inclusion_proof",
    "kms_call_deadline_ms",
    "kms_key_name",
    "leaf_hash",
    "load_or_create_dev_key",
    "load_or_create_note_key",
    "load_private_key_pem",
    "node_hash",
    "open_note",
    "parse_checkpoint_note",
    "parse_tile_path",
    "receipt_hash",
    "receipt_leaf",
    "seal_bundle",
    "seal_receipt",
    "sealed_document",
    "sign_checkpoint",
    "sign_note",
    "sign_reply_timeout_ms",
    "tile_path",
    "tile_width",
    "tree_root",
    "verify_chain",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_jsonl",
    "verify_receipt",
]
