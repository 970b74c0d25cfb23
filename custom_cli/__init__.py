"""The commands: each script's argument parser and main, importable (the hyphenated files at
the top of the repository are their thin entry points); the top layer, imports every
package below it."""
