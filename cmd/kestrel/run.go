package main

import "errors"

func runRun(args []string, s stdio) error      { return errors.New("not implemented yet") }
func runDemo(args []string, s stdio) error     { return errors.New("not implemented yet") }
func runSelftest(args []string, s stdio) error { return errors.New("not implemented yet") }
