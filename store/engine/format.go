package engine

import "time"

// Env is what a format is given by the dataset that opens it: the
// dataset directory, the write-back pool every format shares, the
// reporter that logs each problem once, and the rules of the mount.
type Env struct {
	Back     *Backing
	Pool     *Pool
	Rep      *Reporter
	ReadOnly bool
	// LockTimeout bounds a wait for a lock another program holds on a
	// backing file (dirdb's NAME.lock, a store's flock).
	LockTimeout time.Duration
}

// EnvConfig is what an Env is made of besides the directory: the mount
// options the formats see.
type EnvConfig struct {
	PoolUnits   int   // 0: 1000
	PoolBytes   int64 // 0: 64 MiB
	ReadOnly    bool
	LockTimeout time.Duration // 0: DefaultLockTimeout
	// Logf receives one line per problem or refused write; log.Printf
	// if nil.
	Logf func(format string, args ...any)
}

// NewEnv makes the Env of the dataset directory back: a new pool and
// reporter, and cfg's rules.
func NewEnv(back *Backing, cfg EnvConfig) Env {
	if cfg.PoolUnits <= 0 {
		cfg.PoolUnits = 1000
	}
	if cfg.PoolBytes <= 0 {
		cfg.PoolBytes = 64 << 20
	}
	return Env{
		Back:        back,
		Pool:        NewPool(cfg.PoolUnits, cfg.PoolBytes),
		Rep:         NewReporter(cfg.Logf),
		ReadOnly:    cfg.ReadOnly,
		LockTimeout: cfg.LockTimeout,
	}
}

// An Item is a member of a format's item that the dataset hands out,
// referenced: the caller releases it.
type Item interface{ Release() }

// Visibility is how a name of a backing directory is shown.
type Visibility int

const (
	// Listed: shown in listings and reachable by name.
	Listed Visibility = iota
	// Unlisted: reachable by name, left out of listings (dirdb's lock
	// files, which backups must not copy but dirdb processes working
	// through the mount open).
	Unlisted
	// Hidden: a format's own bookkeeping, never shown.
	Hidden
)

// A Format is what the dataset asks of one on-disk format. The dataset
// offers every request to its formats in turn; the first that handles
// it answers.
type Format interface {
	// Classify returns, referenced, the item the regular file rel is a
	// member of; nil when it is none of this format's.
	Classify(rel string) (Item, error)
	// Visibility says how name in directory dirRel is shown; Listed
	// when the format has no say.
	Visibility(dirRel, name string) Visibility
	// Unlink removes rel when it is this format's to remove (handled);
	// otherwise the dataset unlinks the backing file.
	Unlink(rel string) (handled bool, err error)
	// Rename renames from to to, or refuses to, when either is this
	// format's concern (handled); otherwise the next format is asked,
	// and at last the dataset renames the backing file. flags are
	// renameat2's.
	Rename(from, to string, flags uint) (handled bool, err error)
	// Moved follows a rename (exchange: RENAME_EXCHANGE) or, with to
	// "", an unlink that succeeded, whoever did it: nothing new may be
	// served from the old names.
	Moved(from, to string, exchange bool)
	// Check validates this format's items in directory dirRel, whose
	// sorted names are given. It only reads.
	Check(dirRel string, names []string) []Problem
	// Sync makes durable what the format keeps beyond the pool; called
	// after the pool is flushed.
	Sync() error
	// Close publishes what is pending and releases every backing file;
	// called once, after the pool's last flush and Sync.
	Close() error
}

// DefaultLockTimeout is how long arrayfs waits for a lock another program
// holds (a dirdb entry's, a store's) before it gives up with EBUSY.
const DefaultLockTimeout = 30 * time.Second
