//go:build linux

package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/alecthomas/kong"
)

// writeCompletion prints a completion script for commands and flags, made
// from the CLI's own model so it never goes stale.
func writeCompletion(w io.Writer, app *kong.Application, shell string) error {
	var cmds []string
	var walk func(n *kong.Node, prefix string)
	flags := map[string][]string{}
	walk = func(n *kong.Node, prefix string) {
		for _, c := range n.Children {
			if c.Hidden {
				continue
			}
			path := strings.TrimSpace(prefix + " " + c.Name)
			cmds = append(cmds, path)
			for _, f := range c.Flags {
				flags[path] = append(flags[path], "--"+f.Name)
			}
			walk(c, path)
		}
	}
	walk(app.Node, "")
	var top []string
	for _, c := range app.Children {
		if !c.Hidden {
			top = append(top, c.Name)
		}
	}
	switch shell {
	case "bash", "zsh":
		if shell == "zsh" {
			fmt.Fprintln(w, "autoload -U +X bashcompinit && bashcompinit")
		}
		fmt.Fprintln(w, "_sockfaas() {\n  local cur=${COMP_WORDS[COMP_CWORD]} path=\"\"\n  local i; for ((i=1; i<COMP_CWORD; i++)); do [[ ${COMP_WORDS[i]} == -* ]] || path=\"${path:+$path }${COMP_WORDS[i]}\"; done\n  case \"$path\" in")
		fmt.Fprintf(w, "    \"\") COMPREPLY=($(compgen -W %q -- \"$cur\")) ;;\n", strings.Join(top, " "))
		for _, c := range cmds {
			var words []string
			for _, sub := range cmds {
				if rest, ok := strings.CutPrefix(sub, c+" "); ok && !strings.Contains(rest, " ") {
					words = append(words, rest)
				}
			}
			words = append(words, flags[c]...)
			fmt.Fprintf(w, "    %q) COMPREPLY=($(compgen -W %q -- \"$cur\")) ;;\n", c, strings.Join(words, " "))
		}
		fmt.Fprintln(w, "  esac\n}\ncomplete -F _sockfaas sockfaas")
	case "fish":
		for _, c := range top {
			fmt.Fprintf(w, "complete -c sockfaas -n __fish_use_subcommand -a %s\n", c)
		}
	}
	return nil
}
