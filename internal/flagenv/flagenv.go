// Package flagenv reads a Warren binary's command line the way every main does: flags parsed,
// each also settable as an environment variable (PREFIX_FLAG_NAME, dashes as underscores)
// through one viper instance, and a JSON slog logger at the --log-level the flags ask for.
package flagenv

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Parse parses args into fs (adding --log-level when fs lacks it), binds every flag to viper
// with envPrefix, and returns the viper instance and the logger.
func Parse(fs *pflag.FlagSet, args []string, envPrefix string) (*viper.Viper, *slog.Logger, error) {
	if fs.Lookup("log-level") == nil {
		fs.String("log-level", "info", "debug, info, warn or error")
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	v := viper.New()
	if err := v.BindPFlags(fs); err != nil {
		return nil, nil, err
	}
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	var level slog.Level
	if err := level.UnmarshalText([]byte(v.GetString("log-level"))); err != nil {
		return nil, nil, fmt.Errorf("log-level: %w", err)
	}
	return v, slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
}
