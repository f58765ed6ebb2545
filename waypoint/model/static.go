package model

import (
	"fmt"
	"os"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/warrenmesh/warren/api/proto/mesh/v1"
)

// LoadStatic reads a WaypointConfig from a YAML or JSON file in the
// protobuf's JSON mapping (camelCase field names, enums by name, e.g.
// "kind: ROUTE_KIND_HTTP"). Unknown fields are refused.
func LoadStatic(path string) (*meshv1.WaypointConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("static config: %w", err)
	}
	return ParseStatic(b)
}

// ParseStatic is LoadStatic on the file's contents.
func ParseStatic(b []byte) (*meshv1.WaypointConfig, error) {
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("static config: %w", err)
	}
	var cfg meshv1.WaypointConfig
	if err := protojson.Unmarshal(js, &cfg); err != nil {
		return nil, fmt.Errorf("static config: %w", err)
	}
	return &cfg, nil
}
