from ebpfguard.cli import main

main()
