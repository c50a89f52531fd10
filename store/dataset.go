// Package store is the dataset: it opens a dataset directory, owns the
// write-back pool its formats share, asks each format what a name is and
// dispatches (engine.Formats), and runs each format's checker.
//
// It may import store/engine and the format packages (store/daf,
// store/docarray, store/dirdb); it never imports FUSE. No format's
// state or logic lives here: a format package owns all of its own, and
// imports nothing of arrayfs but store/engine (imports_test.go holds
// every package to that).
package store

import (
	"time"

	"github.com/arrayfs/arrayfs/store/daf"
	"github.com/arrayfs/arrayfs/store/dirdb"
	"github.com/arrayfs/arrayfs/store/docarray"
	"github.com/arrayfs/arrayfs/store/engine"
)

// Config is what the engine needs from the mount options.
type Config struct {
	PoolUnits int
	PoolBytes int64
	// KeyLength is the docarray key length to use; 0 auto-detects.
	KeyLength int
	ReadOnly  bool
	// LockTimeout bounds the wait for a lock another program holds (a
	// dirdb entry's, a store's); 0 means engine.DefaultLockTimeout.
	LockTimeout time.Duration
	// Logf receives one line per problem or refused write; log.Printf if nil.
	Logf func(format string, args ...any)
}

// A Dataset is an open dataset directory: the formats that recognise its
// items and the write-back pool they share. Every byte arrayfs writes
// under the directory goes through a Dataset. Its Classify, Hidden,
// Unlisted, Unlink, Rename and Sync ask the formats in turn.
type Dataset struct {
	engine.Formats
	lock *datasetLock // a writable dataset's (datasetlock.go)
	cfg  Config

	arrays *daf.Arrays
	dirdb  *dirdb.Databases
	docs   *docarray.Stores
}

// newDataset makes the Dataset of env, with every format, in the order
// they are asked: a dirdb member is a dirdb member whatever else its name
// says. A new format is one line here.
func newDataset(env engine.Env, cfg Config) *Dataset {
	d := &Dataset{cfg: cfg}
	d.dirdb = dirdb.NewDatabases(env)
	d.arrays = daf.NewArrays(env)
	d.docs = docarray.NewStores(env, cfg.KeyLength)
	d.Formats = engine.Formats{Env: env, List: []engine.Format{d.dirdb, d.arrays, d.docs}}
	return d
}

// Open opens the dataset directory root.
func Open(root string, cfg Config) (*Dataset, error) {
	back, err := engine.OpenBacking(root)
	if err != nil {
		return nil, err
	}
	var lock *datasetLock
	if !cfg.ReadOnly {
		if lock, err = lockDataset(back.Path(), back.Fd()); err != nil {
			back.Close()
			return nil, err
		}
	}
	env := engine.NewEnv(back, engine.EnvConfig{
		PoolUnits: cfg.PoolUnits, PoolBytes: cfg.PoolBytes,
		ReadOnly: cfg.ReadOnly, LockTimeout: cfg.LockTimeout, Logf: cfg.Logf,
	})
	d := newDataset(env, cfg)
	d.lock = lock
	return d, nil
}

// Root is the dataset directory's absolute path, for messages: every
// access goes through Backing.
func (d *Dataset) Root() string { return d.Back.Path() }

// Backing is the dataset directory through which files are reached.
func (d *Dataset) Backing() *engine.Backing { return d.Back }

// Pool is the dataset's write-back pool.
func (d *Dataset) Pool() *engine.Pool { return d.Env.Pool }

// ReadOnly reports whether the dataset was opened read-only.
func (d *Dataset) ReadOnly() bool { return d.cfg.ReadOnly }

// Logf logs one line the way the dataset reports problems.
func (d *Dataset) Logf(format string, args ...any) { d.Rep.Logf(format, args...) }

// Report logs a problem once per mount.
func (d *Dataset) Report(p engine.Problem) { d.Rep.Report(p) }

// Arrays are the dataset's daf arrays.
func (d *Dataset) Arrays() *daf.Arrays { return d.arrays }

// Dirdb are the dataset's dirdb databases.
func (d *Dataset) Dirdb() *dirdb.Databases { return d.dirdb }

// Docs are the dataset's document stores.
func (d *Dataset) Docs() *docarray.Stores { return d.docs }

// Close writes back everything, releases every backing file and the
// dataset's lock.
func (d *Dataset) Close() error {
	err := d.Formats.Close()
	d.Back.Close()
	d.lock.release()
	return err
}

// Tidy removes name from directory dirRel when it is arrayfs's own
// leftover: a staged file no process owns (a crash interrupted the write
// that made it). A stage being written, by this mount or any other
// process, is its owner's and stays.
func (d *Dataset) Tidy(dirRel, name string) {
	if !engine.IsStageName(name) || d.cfg.ReadOnly {
		return
	}
	engine.TidyStage(d.Back, d.Rep, dirRel, name)
}
