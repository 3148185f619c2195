package pressure

import "embed"

// Source is this package's Go source. The config reference (`holdfast config
// reference`, docs/CONFIG.md) takes the doc comments of the config keys
// defined here from it, so that they are written once, at the field.
//
//go:embed *.go
var Source embed.FS
