package main

import (
	"strings"

	"github.com/arrayfs/arrayfs/mountopts"
)

// mountArgs are the arguments of `arrayfs mount` (and demo): options may
// come before or after the positional arguments, as with mount(8).
type mountArgs struct {
	opts       mountopts.Options
	lists      []string // the -o lists as given, to pass on when daemonizing
	background bool
	logFile    string
	positional []string
}

func parseMountArgs(args []string) (*mountArgs, error) {
	m := &mountArgs{opts: mountopts.Default()}
	for i := 0; i < len(args); i++ {
		a := args[i]
		value := func(flag string) (string, error) {
			if v, ok := strings.CutPrefix(a, flag+"="); ok {
				return v, nil
			}
			if i+1 >= len(args) {
				return "", usagef("%s needs a value", flag)
			}
			i++
			return args[i], nil
		}
		switch {
		case a == "--":
			m.positional = append(m.positional, args[i+1:]...)
			i = len(args)
		case a == "-o" || a == "--options" || strings.HasPrefix(a, "--options="):
			v, err := value("--options")
			if err != nil {
				return nil, err
			}
			if err := m.addOptions(v); err != nil {
				return nil, err
			}
		case strings.HasPrefix(a, "-o"):
			if err := m.addOptions(a[2:]); err != nil {
				return nil, err
			}
		case a == "--background" || a == "-b":
			m.background = true
		case a == "-f" || a == "--foreground":
			m.background = false
		case a == "--log" || strings.HasPrefix(a, "--log="):
			v, err := value("--log")
			if err != nil {
				return nil, err
			}
			m.logFile = v
		case strings.HasPrefix(a, "-") && a != "-":
			return nil, usagef("unknown flag %s", a)
		default:
			m.positional = append(m.positional, a)
		}
	}
	return m, nil
}

func (m *mountArgs) addOptions(list string) error {
	if err := m.opts.Set(list); err != nil {
		return usagef("%v", err) // a mistake on the command line: exit 2
	}
	m.lists = append(m.lists, list)
	return nil
}
