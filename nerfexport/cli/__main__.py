from nerfexport.cli import main

main()
