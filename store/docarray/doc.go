// Package docarray serves DocumentArrayMemmap stores (docarray 0.0.1,
// ../shared/formats/docarray-memmap.md): a directory holding header.bin
// and body.bin is shown as a directory of documents, one file per key,
// with a virtual .docarray marker; arrayfs's own per-document metadata
// lives in a sidecar the original ignores.
//
// It imports store/engine (and protobuf's wire decoding) and nothing
// else of arrayfs.
//
// Invariants: the store's files are only appended to, and their header
// records rewritten in place, the way the original writes them, so that
// the original reads every state arrayfs leaves; every write of them
// happens under the store directory's exclusive flock after a re-read
// (lock.go), and a change another program made first is reloaded and the
// mount's pending changes replayed on top (journal.go); a document's
// pending version is served until its write-back is durable. Lock order:
// Store.mutMu, then wbMu, then the directory's flock, then Store.mu;
// Stores.openMu before Stores.mu.
package docarray
