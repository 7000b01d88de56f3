package main

import "errors"

func runDemo(args []string, s stdio) error { return errors.New("not implemented yet") }
