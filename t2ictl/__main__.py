from t2ictl.cli import main

main()
