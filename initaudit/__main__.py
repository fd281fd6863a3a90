from initaudit.cli import main

main()
