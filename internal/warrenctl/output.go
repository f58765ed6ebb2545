package warrenctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// Outputs are the -o values of commands whose output is data.
var Outputs = []string{"table", "json", "yaml"}

// CheckOutput refuses an -o value that is not one of Outputs.
func CheckOutput(o string) error {
	for _, v := range Outputs {
		if o == v {
			return nil
		}
	}
	return fmt.Errorf("output %q: want %s", o, strings.Join(Outputs, ", "))
}

// A Table is data with a table rendering.
type Table interface {
	Header() []string
	Rows() [][]string
}

// Print writes v as JSON or YAML (v itself) or as a table (v must be a Table).
func Print(w io.Writer, output string, v any) error {
	switch output {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "", "table":
		t, ok := v.(Table)
		if !ok {
			return fmt.Errorf("no table rendering of %T", v)
		}
		return WriteTable(w, t.Header(), t.Rows())
	}
	return CheckOutput(output)
}

// WriteTable writes aligned columns, kubectl style; empty cells print as "-".
func WriteTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			if c == "" {
				c = "-"
			}
			cells[i] = c
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func jsonOf(v any) ([]byte, error) { return json.Marshal(v) }
