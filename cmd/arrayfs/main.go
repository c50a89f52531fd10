// Command arrayfs mounts a dataset directory with FUSE and shows every
// document, matrix slice and dirdb entry in it as a plain file.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
)

// A command is one verb of the CLI.
type command struct {
	usage string // first line: the synopsis
	help  string // the rest: what it does, its flags
	run   func(args []string) error
}

var commands map[string]*command

func init() {
	// Filled here, not in the declaration, because help refers back to
	// the table.
	commands = map[string]*command{
		"mount":   mountCommand,
		"umount":  umountCommand,
		"check":   checkCommand,
		"prune":   pruneCommand,
		"demo":    demoCommand,
		"version": {usage: "arrayfs version", help: "Prints the version of arrayfs and of the libraries it is built with.", run: runVersion},
		"help":    {usage: "arrayfs help [COMMAND]", help: "Prints the usage of arrayfs or of one command.", run: runHelp},
	}
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitError ends the process with a status and no message of its own
// (the command has printed what it had to say).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		printUsage(os.Stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "--help":
		name = "help"
	case "-v", "--version":
		name = "version"
	}
	cmd := commands[name]
	if cmd == nil {
		fmt.Fprintf(os.Stderr, "arrayfs: unknown command %q (see 'arrayfs help')\n", name)
		return 2
	}
	err := cmd.run(args[1:])
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "arrayfs %s: %s\nusage: %s\n", name, ue.msg, cmd.usage)
		return 2
	default:
		fmt.Fprintf(os.Stderr, "arrayfs %s: %v\n", name, err)
		return 1
	}
}

func printUsage(w *os.File) {
	fmt.Fprintln(w, "arrayfs: serve datasets of memory-mapped arrays, document stores and dirdb databases as plain files")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %s\n", commands[n].usage)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "'arrayfs help COMMAND' tells more about a command.")
}

func runHelp(args []string) error {
	if len(args) == 0 {
		printUsage(os.Stdout)
		return nil
	}
	if len(args) > 1 {
		return usagef("takes at most one command")
	}
	cmd := commands[args[0]]
	if cmd == nil {
		return fmt.Errorf("unknown command %q", args[0])
	}
	fmt.Printf("usage: %s\n\n%s\n", cmd.usage, strings.TrimSpace(cmd.help))
	return nil
}

// version is set at build time with -ldflags "-X main.version=..."; a
// plain build reports the module version or "devel".
var version = ""

func versionString() string {
	v := version
	deps := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, d := range bi.Deps {
			if d.Path == "github.com/hanwen/go-fuse/v2" {
				deps = ", go-fuse " + d.Version
			}
		}
	}
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	return fmt.Sprintf("arrayfs %s (%s%s, %s/%s)", v, runtime.Version(), deps, runtime.GOOS, runtime.GOARCH)
}

func runVersion(args []string) error {
	if len(args) != 0 {
		return usagef("takes no arguments")
	}
	fmt.Println(versionString())
	return nil
}
